//! Kubernetes TokenReview for the CA: a proxy bootstraps with its projected service-account token
//! (audience [`TOKEN_AUDIENCE`]), which the API server vouches for.

use std::sync::Arc;

use jalin_ca::auth::{KubernetesAuthenticator, ReviewError, TokenReviewStatus, TokenReviewer};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

/// The audience proxies request for the token they present to the CA (`injection.tokenAudience`
/// in the mesh config).
pub const TOKEN_AUDIENCE: &str = "jalin-ca";

/// Reviews tokens through the API server.
#[derive(Clone)]
pub struct ApiTokenReviewer {
    client: Client,
}

#[async_trait::async_trait]
impl TokenReviewer for ApiTokenReviewer {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let out = api.create(&PostParams::default(), &review).await.map_err(|e| {
            ReviewError(format!(
                "TokenReview failed: {e}; the control plane's ServiceAccount needs `create` on tokenreviews.authentication.k8s.io"
            ))
        })?;
        let status = out.status.unwrap_or_default();
        Ok(TokenReviewStatus {
            authenticated: status.authenticated.unwrap_or(false),
            username: status.user.and_then(|u| u.username).unwrap_or_default(),
            audiences: status.audiences.unwrap_or_default(),
            error: status.error,
        })
    }
}

/// The CA authenticator for service-account tokens.
pub fn authenticator(client: Client, trust_domain: &str) -> KubernetesAuthenticator {
    KubernetesAuthenticator::new(
        Arc::new(ApiTokenReviewer { client }),
        vec![TOKEN_AUDIENCE.to_owned()],
        trust_domain,
    )
}
