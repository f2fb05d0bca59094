//! Signing a person in: the first factor (a password, a passkey, an upstream identity provider),
//! the second (TOTP, recovery codes, a passkey), the browser session that carries them, and the
//! person's own account.

pub mod account;
pub mod authentication;
pub mod federation;
pub mod journey;
pub mod passkeys;
pub mod password;
pub mod second_factor;
pub mod session;
