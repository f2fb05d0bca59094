//! The sign-in journey (`signin::Journey`), driven directly: a browser session over the real
//! session store, no pages and no HTTP. Each transition, and what the session holds after it.

use std::sync::Arc;

use tessera::config::MfaPolicy;
use tessera::grant::authorization::AuthorizeError;
use tessera::platform::audit::RequestMeta;
use tessera::signin::journey::{FirstFactor, Journey, JourneyError, Step};
use tessera::signin::session::BrowserSession;
use tessera::store;
use uuid::Uuid;

use crate::common::TestApp;

struct Browser {
    app: TestApp,
    session: BrowserSession,
    meta: RequestMeta,
    user: store::users::User,
}

impl Browser {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let id = Uuid::new_v4();
        assert!(store::users::insert(&app.db.pool, id, "alice", None, Some("$argon2id$unused")).await.unwrap());
        let user = store::users::by_id(&app.db.pool, id).await.unwrap().unwrap();
        let store = Arc::new(app.state.sessions.clone());
        let session = BrowserSession::from(tower_sessions::Session::new(None, store, None));
        let meta = RequestMeta { request_id: "journey-test".into(), source: "127.0.0.1".parse().unwrap() };
        Self { app, session, meta, user }
    }

    fn journey(&self, mfa: MfaPolicy) -> Journey<'_> {
        Journey {
            pool: &self.app.db.pool,
            session: &self.session,
            mfa,
            authorization: self.app.state.authorization(&self.meta),
            user_agent: Some("journey-test/1.0"),
        }
    }

    async fn signed_in(&self) -> bool {
        self.session.signed_in(&self.app.db.pool).await.unwrap().is_some()
    }

    async fn signed_in_for_account(&self) -> Option<bool> {
        self.session.signed_in_for_account(&self.app.db.pool).await.unwrap().map(|u| u.setup_only)
    }
}

#[tokio::test]
async fn a_password_with_a_second_factor_waits_for_it_then_signs_in() {
    let b = Browser::new().await;
    let journey = b.journey(MfaPolicy::Optional);
    let step = journey.first_factor(&b.user, FirstFactor::Password { second_factor: true }, None).await.unwrap();
    assert_eq!(step, Step::SecondFactor);
    assert!(!b.signed_in().await, "half signed in is not signed in");
    let half = b.session.second_factor_pending().await.unwrap().expect("the sign-in waits");
    assert_eq!(half.user_id, b.user.id);

    assert_eq!(journey.second_factor_given(&half).await.unwrap(), Step::Account);
    assert!(b.signed_in().await);
    assert!(b.session.second_factor_pending().await.unwrap().is_none(), "the wait is over");
}

#[tokio::test]
async fn a_password_alone_signs_in_unless_a_second_factor_is_required() {
    let b = Browser::new().await;
    let password = FirstFactor::Password { second_factor: false };
    assert_eq!(b.journey(MfaPolicy::Optional).first_factor(&b.user, password, None).await.unwrap(), Step::Account);
    assert!(b.signed_in().await);

    let b = Browser::new().await;
    let step = b.journey(MfaPolicy::Required).first_factor(&b.user, password, None).await.unwrap();
    assert_eq!(step, Step::SetUpSecondFactor);
    assert!(!b.signed_in().await, "a setup-only session is not signed in for applications");
    assert_eq!(b.signed_in_for_account().await, Some(true), "but it opens the account page");

    b.journey(MfaPolicy::Required).second_factor_added(&b.user).await.unwrap();
    assert!(b.signed_in().await, "both factors shown: signed in in full");
}

#[tokio::test]
async fn with_two_step_off_a_second_factor_is_not_asked_for() {
    let b = Browser::new().await;
    let password = FirstFactor::Password { second_factor: true };
    assert_eq!(b.journey(MfaPolicy::Off).first_factor(&b.user, password, None).await.unwrap(), Step::Account);
    assert!(b.session.second_factor_pending().await.unwrap().is_none());
}

#[tokio::test]
async fn passkeys_and_upstream_providers_need_no_second_factor() {
    for factor in [FirstFactor::Passkey, FirstFactor::Upstream] {
        let b = Browser::new().await;
        assert_eq!(b.journey(MfaPolicy::Required).first_factor(&b.user, factor, None).await.unwrap(), Step::Account);
        assert!(b.signed_in().await, "{factor:?} signs in in full");
    }
}

#[tokio::test]
async fn a_request_this_browser_did_not_start_is_not_continued() {
    let b = Browser::new().await;
    let handle = "a".repeat(43);
    let result = b.journey(MfaPolicy::Optional).first_factor(&b.user, FirstFactor::Passkey, Some(&handle)).await;
    assert!(matches!(result, Err(JourneyError::Authorization(AuthorizeError::Expired))), "{result:?}");
}

#[tokio::test]
async fn an_account_disabled_while_the_second_factor_was_given_is_not_signed_in() {
    let b = Browser::new().await;
    let journey = b.journey(MfaPolicy::Optional);
    journey.first_factor(&b.user, FirstFactor::Password { second_factor: true }, None).await.unwrap();
    let half = b.session.second_factor_pending().await.unwrap().unwrap();
    store::users::set_disabled(&b.app.db.pool, "alice", true).await.unwrap();
    assert!(matches!(journey.second_factor_given(&half).await, Err(JourneyError::Expired)));
    assert!(!b.signed_in().await);
}
