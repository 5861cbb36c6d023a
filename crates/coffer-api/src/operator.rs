//! Coffer's operator actions over the API: `X-Amz-Target: CofferOperator.<Action>`, SigV4-signed
//! like KMS requests, recorded in the audit log like them. The account root may act; an IAM user
//! needs an identity policy that allows `coffer:<Action>`. The binary does the work behind the
//! [`Operator`] trait (sealing, rotating the root), because it owns the server's lifecycle.

use std::future::Future;
use std::pin::Pin;

use coffer_kms::{Caller, KmsError};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

pub const TARGET_PREFIX: &str = "CofferOperator.";

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wipe the root of trust from memory; only unseal answers afterwards (shamir mode).
    Seal,
    /// Add a root generation and rewrap every stored secret under it.
    RotateRoot,
    /// Return an encrypted archive of the metadata, wrapped key material, root configuration and
    /// audit chain head, consistent at one instant.
    CreateBackup,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Seal => "Seal",
            Action::RotateRoot => "RotateRoot",
            Action::CreateBackup => "CreateBackup",
        }
    }

    fn iam_action(self) -> &'static str {
        match self {
            Action::Seal => "coffer:Seal",
            Action::RotateRoot => "coffer:RotateRoot",
            Action::CreateBackup => "coffer:CreateBackup",
        }
    }

    /// The action an `X-Amz-Target` names, if it is an operator target.
    pub fn from_target(target: Option<&str>) -> Option<Result<Self, ApiError>> {
        let name = target?.strip_prefix(TARGET_PREFIX)?;
        Some(match name {
            "Seal" => Ok(Action::Seal),
            "RotateRoot" => Ok(Action::RotateRoot),
            "CreateBackup" => Ok(Action::CreateBackup),
            other => Err(ApiError::UnknownOperation(format!(
                "Coffer has no operator action {other:?}; the actions are Seal, RotateRoot and CreateBackup."
            ))),
        })
    }
}

pub type ActionFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, KmsError>> + Send + 'a>>;

/// What performs operator actions: the server.
pub trait Operator: Send + Sync + std::fmt::Debug {
    fn act(&self, action: Action) -> ActionFuture<'_>;
}

/// Authorizes and performs `action` for `caller`.
pub(crate) async fn run(
    state: &AppState,
    action: Action,
    caller: &Caller,
) -> Result<Value, ApiError> {
    state
        .kms
        .authorize_account(caller, action.iam_action())
        .await?;
    let operator = state.operator.as_ref().ok_or_else(|| {
        ApiError::Kms(KmsError::UnsupportedOperation(
            "this Coffer does not take operator actions over the API".into(),
        ))
    })?;
    Ok(operator.act(action).await?)
}
