//! Tenancy: a namespace is a tenant. What a task or reminder may call, which user ids it may
//! name and how large its payload may be follow from the [`TenantPolicy`]s that select its
//! namespace (or the strict default when none does). The same checks run twice: at admission
//! (the webhook, before the object is stored) and by the operator before every call (a policy
//! may have changed since the object was admitted).
mod denial;
mod effective;
mod selector;
mod view;

pub use denial::{Denial, Rule};
pub use effective::{Effective, Resolved};
pub use view::{Tenancy, task_owner};

#[cfg(test)]
mod tests;
