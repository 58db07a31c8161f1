//! Codes, sign-in and sign-up, sessions and their revocation, tested
//! through `apply` and `query` and the bytes they answer.

use super::*;
use crate::app::{AppCommand, AppQuery, Refusal, Request, answer_of};
use courier_raft::logic::MemView;

fn refused(r: Refusal) -> AuthError {
    match r {
        Refusal::Auth(e) => e,
        other => panic!("{other:?}"),
    }
}
/// A command through the state machine, its answer read back from the bytes.
fn run<C: Request + Into<AppCommand>>(v: &mut MemView, c: C) -> Result<Outcome<C::Answer>> {
    let AppCommand::Auth(c) = c.into() else { unreachable!() };
    Ok(answer_of(&apply(v, &c)?).map_err(refused))
}
fn look<Q: Request + Into<AppQuery>>(v: &MemView, q: Q) -> Result<Outcome<Q::Answer>> {
    let AppQuery::Auth(q) = q.into() else { unreachable!() };
    Ok(answer_of(&query(v, &q)?).map_err(refused))
}

const PHONE: &str = "+15550001111";
const MIN: u64 = 60_000;

fn send(v: &mut MemView, id: u64, now: u64) -> Outcome<CodeSent> {
    run(v, cmd::SendCode { phone: PHONE.into(), code_id: id, code: "12345".into(), ttl_ms: 5 * MIN, max_per_day: 5, now_ms: now })
        .unwrap()
}
fn sess(n: u8) -> NewSession {
    NewSession { token_hash: [n; 32], device: format!("dev{n}"), app_version: "t".into(), node_id: 1, address: "127.0.0.1:1".into() }
}
fn sign_in(v: &mut MemView, id: u64, code: &str, n: u8, now: u64) -> Outcome<Authorized> {
    run(v, cmd::SignIn { phone: PHONE.into(), code_id: id, code: code.into(), session: sess(n), now_ms: now }).unwrap()
}
fn sign_up(v: &mut MemView, id: u64, n: u8, now: u64) -> Outcome<Authorized> {
    let cmd = cmd::SignUp {
        phone: PHONE.into(),
        code_id: id,
        first_name: " Ann ".into(),
        last_name: String::new(),
        session: sess(n),
        group: 7,
        now_ms: now,
    };
    run(v, cmd).unwrap()
}

#[test]
fn phone_and_test_numbers() {
    assert!(valid_phone("+15550001111"));
    for bad in ["15550001111", "+1555", "+0123456789", "+1555000111122223", "+1555abc1111", ""] {
        assert!(!valid_phone(bad), "{bad}");
    }
    assert_eq!(test_number_code("+9996612345").as_deref(), Some("11111"));
    assert_eq!(test_number_code("+9996639999").as_deref(), Some("33333"));
    assert_eq!(test_number_code("+15550001111"), None);
    assert_eq!(test_number_code("+999661234"), None);
}

#[test]
fn new_phone_signs_up_with_a_verified_code_then_signs_in() {
    let mut v = MemView::default();
    assert!(matches!(send(&mut v, 1, 0), Ok(CodeSent { code_id: 1, .. })));
    // Sign-up before the code was checked is refused.
    assert!(matches!(sign_up(&mut v, 1, 1, 10), Err(AuthError::BadRequest(_))));
    assert_eq!(sign_in(&mut v, 1, "12345", 1, 10), Err(AuthError::SignUpRequired));
    let Ok(Authorized { user, session_id }) = sign_up(&mut v, 1, 1, 20) else { panic!() };
    assert_eq!((user.id, user.first_name.as_str(), session_id), ((1 << USER_GROUP_BITS) | 7, "Ann", 1));
    assert_eq!(user_group(user.id), 7);
    // The code is used up.
    assert_eq!(sign_in(&mut v, 1, "12345", 2, 30), Err(AuthError::PhoneCodeExpired));
    send(&mut v, 2, 40).unwrap();
    let Ok(Authorized { user: again, session_id }) = sign_in(&mut v, 2, "12345", 2, 50) else { panic!() };
    assert_eq!((again.id, session_id), (user.id, 2));
    let Ok(list) = look(&v, ask::Sessions { by: [2; 32] }).unwrap() else { panic!() };
    assert_eq!(list.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn three_wrong_codes_end_the_code() {
    let mut v = MemView::default();
    send(&mut v, 1, 0).unwrap();
    assert_eq!(sign_in(&mut v, 1, "00000", 1, 1), Err(AuthError::PhoneCodeInvalid { tries_left: 2 }));
    assert_eq!(sign_in(&mut v, 1, "00000", 1, 2), Err(AuthError::PhoneCodeInvalid { tries_left: 1 }));
    assert_eq!(sign_in(&mut v, 1, "00000", 1, 3), Err(AuthError::PhoneCodeInvalid { tries_left: 0 }));
    assert_eq!(sign_in(&mut v, 1, "12345", 1, 4), Err(AuthError::PhoneCodeExpired));
}

#[test]
fn codes_expire_after_their_ttl_and_a_new_code_replaces_the_old() {
    let mut v = MemView::default();
    send(&mut v, 1, 0).unwrap();
    assert_eq!(sign_in(&mut v, 1, "12345", 1, 5 * MIN), Err(AuthError::PhoneCodeExpired));
    send(&mut v, 2, 6 * MIN).unwrap();
    send(&mut v, 3, 6 * MIN + 1).unwrap();
    assert_eq!(sign_in(&mut v, 2, "12345", 1, 6 * MIN + 2), Err(AuthError::PhoneCodeExpired));
    assert_eq!(sign_in(&mut v, 3, "12345", 1, 6 * MIN + 3), Err(AuthError::SignUpRequired));
}

#[test]
fn sixth_code_in_a_day_waits_until_the_oldest_leaves_the_window() {
    let mut v = MemView::default();
    for i in 0..5 {
        send(&mut v, i, i * MIN).unwrap();
    }
    assert_eq!(send(&mut v, 9, 10 * MIN), Err(AuthError::FloodWait { secs: ((DAY_MS - 10 * MIN) / 1000) as u32 }));
    // A day after the first one, one more is allowed.
    assert!(send(&mut v, 10, DAY_MS).is_ok());
    assert!(matches!(send(&mut v, 11, DAY_MS + 1), Err(AuthError::FloodWait { .. })));
    assert_eq!(
        run(&mut v, cmd::SendCode { phone: "555".into(), code_id: 1, code: "1".into(), ttl_ms: 1, max_per_day: 5, now_ms: 0 }).unwrap(),
        Err(AuthError::PhoneNumberInvalid)
    );
}

fn ask(v: &mut MemView, id: u64, asker: &str, now: u64) -> Outcome<CodeSentVia> {
    let cmd = cmd::SendCodeFrom { phone: PHONE.into(), code_id: id, code: "12345".into(), ttl_ms: 5 * MIN, max_per_day: 5, now_ms: now, asker: asker.into() };
    run(v, cmd).unwrap()
}

#[test]
fn a_strangers_codes_neither_replace_the_owners_nor_lock_the_owner_out() {
    let mut v = MemView::default();
    // The owner has an account and a logged-in device.
    assert!(matches!(ask(&mut v, 1, "owner", 0), Ok(CodeSentVia { sms: true, .. })));
    sign_in(&mut v, 1, "12345", 1, 1).unwrap_err();
    sign_up(&mut v, 1, 1, 2).unwrap();
    // A new device of the owner asks; strangers ask after it, past the SMS budget.
    assert!(matches!(ask(&mut v, 2, "owner", MIN), Ok(CodeSentVia { sms: true, .. })));
    let mut sms = Vec::new();
    for i in 0..6 {
        match ask(&mut v, 10 + i, "stranger", MIN + 1 + i) {
            Ok(CodeSentVia { sms: s, .. }) => sms.push(s),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sms, [true, true, true, false, false, false], "five SMS a day; then in the app only");
    // A repeat of a request answers the same (and sends no second SMS).
    assert!(matches!(ask(&mut v, 15, "stranger", MIN + 6), Ok(CodeSentVia { sms: false, .. })));
    // The owner's code is still there; a wrong try on another code does not touch it.
    assert!(matches!(sign_in(&mut v, 10, "00000", 3, MIN + 20), Err(AuthError::PhoneCodeInvalid { tries_left: 2 })));
    let Ok(Authorized { session_id, .. }) = sign_in(&mut v, 2, "12345", 2, MIN + 30) else { panic!("the owner signs in") };
    assert_eq!(session_id, 2);
    // Signing in ends every live code of the phone.
    assert_eq!(sign_in(&mut v, 11, "12345", 3, MIN + 40), Err(AuthError::PhoneCodeExpired));
    // Past the budget, a phone without a logged-in device waits for the day.
    let other = |v: &mut MemView, id: u64, now: u64| {
        run(v, cmd::SendCodeFrom { phone: "+15550002222".into(), code_id: id, code: "1".into(), ttl_ms: MIN, max_per_day: 1, now_ms: now, asker: "x".into() }).unwrap()
    };
    assert!(other(&mut v, 1, 0).is_ok());
    assert!(matches!(other(&mut v, 2, 1), Err(AuthError::FloodWait { .. })));
}

#[test]
fn a_code_left_by_the_previous_version_still_signs_in() {
    let mut v = MemView::default();
    send(&mut v, 1, 0).unwrap();
    assert!(matches!(ask(&mut v, 2, "a", 1), Ok(CodeSentVia { .. })));
    assert_eq!(sign_in(&mut v, 1, "12345", 1, 2), Err(AuthError::SignUpRequired));
    sign_up(&mut v, 1, 1, 3).unwrap();
    assert_eq!(look(&v, ask::Code { phone: PHONE.into() }).unwrap(), Ok(None), "no code outlives the sign-up");
}

#[test]
fn revoke_others_one_and_current() {
    let mut v = MemView::default();
    send(&mut v, 1, 0).unwrap();
    sign_in(&mut v, 1, "12345", 1, 1).unwrap_err();
    sign_up(&mut v, 1, 1, 2).unwrap();
    for (i, n) in [(2u64, 2u8), (3, 3), (4, 4)] {
        send(&mut v, i, 10 * i).unwrap();
        sign_in(&mut v, i, "12345", n, 10 * i + 1).unwrap();
    }
    let revoke = |v: &mut MemView, by: u8, which: Revoke| run(v, cmd::Revoke { by: [by; 32], which, now_ms: 100 }).unwrap();
    assert_eq!(revoke(&mut v, 1, Revoke::One(2)), Ok(vec![[2; 32]]));
    // Ending an ended session again (a retried request) is a no-op; an id never given is bad input.
    assert_eq!(revoke(&mut v, 1, Revoke::One(2)), Ok(vec![]));
    assert!(matches!(revoke(&mut v, 1, Revoke::One(5)), Err(AuthError::BadRequest(_))));
    assert!(matches!(revoke(&mut v, 1, Revoke::One(0)), Err(AuthError::BadRequest(_))));
    // A revoked session can do nothing, and says so.
    assert_eq!(revoke(&mut v, 2, Revoke::Others), Err(AuthError::SessionRevoked));
    assert_eq!(revoke(&mut v, 9, Revoke::Others), Err(AuthError::Unauthorized));
    assert_eq!(revoke(&mut v, 1, Revoke::Others), Ok(vec![[3; 32], [4; 32]]));
    let Ok(val) = look(&v, ask::Validate(vec![[1; 32], [3; 32], [8; 32]])).unwrap() else { panic!() };
    assert!(matches!(&val[0], Validity::Live { session, .. } if session.id == 1));
    assert_eq!(val[1..], [Validity::Revoked, Validity::Unknown]);
    assert_eq!(revoke(&mut v, 1, Revoke::Current), Ok(vec![[1; 32]]));
    assert_eq!(look(&v, ask::Sessions { by: [1; 32] }).unwrap(), Err(AuthError::SessionRevoked));
    // A log-out applied twice answers the same.
    assert_eq!(revoke(&mut v, 1, Revoke::Current), Ok(vec![[1; 32]]));
    assert_eq!(revoke(&mut v, 1, Revoke::Others), Err(AuthError::SessionRevoked));
}

#[test]
fn commands_applied_twice_answer_as_the_first_time() {
    let mut v = MemView::default();
    let first = send(&mut v, 1, 0);
    assert_eq!(send(&mut v, 1, 5), first, "a repeated send_code");
    for i in 2..=5 {
        send(&mut v, i, i).unwrap();
    }
    assert_eq!(send(&mut v, 5, 10), Ok(CodeSent { code_id: 5, expires_ms: 5 + 5 * MIN }), "the repeat did not count");
    assert_eq!(sign_in(&mut v, 5, "12345", 1, 20), Err(AuthError::SignUpRequired));
    let up = sign_up(&mut v, 5, 1, 30);
    assert!(up.is_ok());
    assert_eq!(sign_up(&mut v, 5, 1, 40), up, "a repeated sign-up: the same user and session");
    let before = v.clone();
    assert_eq!(sign_up(&mut v, 5, 1, 50), up);
    assert_eq!(v, before, "a repeat writes nothing");
    send(&mut v, 9, DAY_MS).unwrap();
    let signed = sign_in(&mut v, 9, "12345", 2, DAY_MS + 1);
    assert!(signed.is_ok());
    assert_eq!(sign_in(&mut v, 9, "12345", 2, DAY_MS + 2), signed, "a repeated sign-in");
    // Another phone cannot take over a session by replaying its token.
    let other = cmd::SignIn { phone: "+15550002222".into(), code_id: 9, code: "12345".into(), session: sess(2), now_ms: DAY_MS + 3 };
    assert_eq!(run(&mut v, other).unwrap(), Err(AuthError::PhoneCodeExpired));
}
