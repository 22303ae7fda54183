//! jalin-ca: certificate authority and workload identity rooted in an agency PKI.
