//! Success-rate ejection (Envoy's `success_rate_*`): among hosts with enough requests in the
//! interval, eject those whose success rate is below `mean − stdev × factor / 1000`.

use jalin_xds::model::traffic::SuccessRate;

use crate::balance::EndpointId;

/// The hosts below the threshold, lowest rate first. `samples` are (host, success %) of hosts
/// that reached `request_volume`; nothing is ejected with fewer than `minimum_hosts` samples.
pub fn outliers(samples: &[(EndpointId, f64)], sr: &SuccessRate) -> Vec<EndpointId> {
    if samples.is_empty() || samples.len() < usize::try_from(sr.minimum_hosts).unwrap_or(usize::MAX)
    {
        return Vec::new();
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = samples.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - variance.sqrt() * f64::from(sr.stdev_factor) / 1000.0;
    let mut below: Vec<(EndpointId, f64)> = samples
        .iter()
        .copied()
        .filter(|(_, r)| *r < threshold)
        .collect();
    below.sort_by(|a, b| a.1.total_cmp(&b.1));
    below.into_iter().map(|(h, _)| h).collect()
}
