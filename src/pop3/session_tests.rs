//! Sessions over an in-memory pipe, against a scripted server that checks every line.

use super::*;
use crate::pop3::script::{Step, expect, expect_alone, greeting, message, partial, send, serve};
use crate::pop3::tls::TlsOptions;
use crate::pop3::transport::Timeouts;
use std::time::Duration;

fn options() -> ConnectOptions {
    ConnectOptions {
        host: "pop.example.net".into(),
        port: 995,
        security: Security::Tls,
        tls: TlsOptions::default(),
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
    }
}

fn credentials() -> Credentials {
    Credentials::password("me", crate::pop3::Secret::new("secret"))
}

/// Runs `client` against a server playing `steps`; panics with the transcript if the
/// client sent anything the script did not expect.
async fn scripted<T>(
    steps: Vec<Step>,
    client: impl AsyncFnOnce(tokio::io::DuplexStream) -> T,
) -> T {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(serve(s, steps));
    let out = client(c).await;
    if let Err(e) = server.await.unwrap() {
        panic!("{e}");
    }
    out
}

/// Everything a retrieval handed over.
#[derive(Debug, Default, PartialEq, Eq)]
struct Recorded {
    messages: Vec<(MsgNum, Vec<u8>)>,
    refused: Vec<MsgNum>,
    current: Option<(MsgNum, Vec<u8>)>,
}

impl RetrieveHandler for Recorded {
    fn start(&mut self, msg: MsgNum) -> std::io::Result<()> {
        self.current = Some((msg, Vec::new()));
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.current.as_mut().unwrap().1.extend_from_slice(bytes);
        Ok(())
    }
    fn finish(&mut self, msg: MsgNum, _octets: u64) -> std::io::Result<()> {
        let (m, body) = self.current.take().unwrap();
        assert_eq!(m, msg);
        self.messages.push((m, body));
        Ok(())
    }
    fn refused(&mut self, msg: MsgNum, _status: Status) -> std::io::Result<()> {
        self.refused.push(msg);
        Ok(())
    }
}

/// A session over `io`, logged in with USER/PASS.
async fn logged_in(io: tokio::io::DuplexStream) -> Authenticated {
    over(io, &options(), true)
        .await
        .unwrap()
        .login(&credentials(), None)
        .await
        .unwrap()
}

fn login_steps(caps: &[&str]) -> Vec<Step> {
    let mut steps = greeting(caps);
    steps.extend([
        expect("USER me"),
        send("+OK"),
        expect("PASS secret"),
        send("+OK logged in"),
        expect("CAPA"),
    ]);
    let mut after = String::from("+OK\r\n");
    for c in caps {
        after.push_str(c);
        after.push_str("\r\n");
    }
    after.push_str(".\r\n");
    steps.push(Step::Send(after.into_bytes()));
    steps
}

fn msg(n: usize) -> Vec<u8> {
    format!("Subject: {n}\r\n\r\n.dotted line {n}\r\nbody\r\n").into_bytes()
}

#[tokio::test]
async fn a_session_greets_logs_in_lists_and_quits_line_by_line() {
    let mut steps = login_steps(&["UIDL", "USER"]);
    steps.extend([
        expect("UIDL"),
        send("+OK"),
        send("1 a1"),
        send("2 b2"),
        send("."),
        expect("QUIT"),
        send("+OK bye"),
    ]);
    let uidl = scripted(steps, async |io| {
        let g = over(io, &options(), true).await.unwrap();
        assert_eq!(g.greeting(), "POP3 ready");
        let mut s = g.login(&credentials(), None).await.unwrap();
        assert_eq!(s.auth_method(), AuthMethod::User);
        let uidl = s.uidl().await.unwrap();
        s.quit().await.unwrap();
        uidl
    })
    .await;
    let uids: Vec<&[u8]> = uidl.iter().map(|e| e.uid).collect();
    assert_eq!(uids, vec![b"a1".as_slice(), b"b2"]);
}

#[tokio::test]
async fn sasl_plain_is_preferred_over_an_encrypted_stream() {
    let mut steps = greeting(&["SASL PLAIN", "USER"]);
    steps.extend([
        expect("AUTH PLAIN AG1lAHNlY3JldA=="),
        send("+OK"),
        expect("CAPA"),
        send("-ERR no capabilities after login"),
        expect("QUIT"),
        send("+OK"),
    ]);
    scripted(steps, async |io| {
        let s = logged_in(io).await;
        assert_eq!(s.auth_method(), AuthMethod::Plain);
        s.quit().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_long_token_goes_after_the_continuation() {
    let token = "t".repeat(400);
    let creds = Credentials::token("me@example.org", crate::pop3::Secret::new(token.clone()));
    let response = auth::xoauth2_response(&creds);
    let mut steps = greeting(&["SASL XOAUTH2"]);
    steps.extend([
        expect_alone("AUTH XOAUTH2"),
        send("+ "),
        expect(response.expose()),
        send("+OK"),
        expect("CAPA"),
        send("-ERR"),
    ]);
    scripted(steps, async |io| {
        let s = over(io, &options(), true)
            .await
            .unwrap()
            .login(&creds, None)
            .await
            .unwrap();
        assert_eq!(s.auth_method(), AuthMethod::XOAuth2);
    })
    .await;
}

#[tokio::test]
async fn a_refused_login_is_an_auth_error() {
    let mut steps = greeting(&["USER"]);
    steps.extend([
        expect("USER me"),
        send("+OK"),
        expect("PASS secret"),
        send("-ERR [AUTH] invalid credentials"),
    ]);
    let err = scripted(steps, async |io| {
        over(io, &options(), true)
            .await
            .unwrap()
            .login(&credentials(), None)
            .await
            .unwrap_err()
    })
    .await;
    assert!(err.is_auth(), "{err}");
}

/// With PIPELINING, RETRs go out 32 ahead of the answers, never more.
#[tokio::test]
async fn retrieval_keeps_the_pipelining_window_full_and_no_fuller() {
    let n = 40;
    let mut steps = login_steps(&["PIPELINING", "UIDL"]);
    for i in 1..PIPELINE_WINDOW {
        steps.push(expect(&format!("RETR {i}")));
    }
    steps.push(expect_alone(&format!("RETR {PIPELINE_WINDOW}")));
    for k in 1..=n {
        steps.push(message(&msg(k)));
        if k + PIPELINE_WINDOW <= n {
            steps.push(expect_alone(&format!("RETR {}", k + PIPELINE_WINDOW)));
        }
    }
    let msgs: Vec<MsgNum> = (1..=n as u32).map(MsgNum).collect();
    let got = scripted(steps, async |io| {
        let mut s = logged_in(io).await;
        assert!(s.pipelining());
        let mut rec = Recorded::default();
        s.retrieve(&msgs, &mut rec).await.unwrap();
        rec
    })
    .await;
    assert_eq!(got.messages.len(), n);
    for (k, (m, body)) in got.messages.iter().enumerate() {
        assert_eq!(*m, MsgNum(k as u32 + 1));
        assert_eq!(*body, msg(k + 1), "dot-unstuffed exactly once");
    }
}

/// Without PIPELINING, one command at a time; a refused message does not stop the rest,
/// and deletions are answered one by one.
#[tokio::test]
async fn without_pipelining_commands_wait_for_their_answers() {
    let mut steps = login_steps(&["UIDL", "TOP"]);
    steps.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("RETR 2"),
        send("-ERR [SYS/TEMP] try later"),
        expect_alone("RETR 3"),
        message(&msg(3)),
        expect_alone("DELE 1"),
        send("+OK"),
        expect_alone("DELE 3"),
        send("-ERR not now"),
        expect("QUIT"),
        send("+OK"),
    ]);
    let (rec, answers) = scripted(steps, async |io| {
        let mut s = logged_in(io).await;
        let mut rec = Recorded::default();
        s.retrieve(&[MsgNum(1), MsgNum(2), MsgNum(3)], &mut rec)
            .await
            .unwrap();
        let answers = s.delete(&[MsgNum(1), MsgNum(3)]).await.unwrap();
        s.quit().await.unwrap();
        (rec, answers)
    })
    .await;
    assert_eq!(rec.refused, vec![MsgNum(2)]);
    assert_eq!(rec.messages, vec![(MsgNum(1), msg(1)), (MsgNum(3), msg(3))]);
    let oks: Vec<bool> = answers.iter().map(|(_, st)| st.is_ok()).collect();
    assert_eq!(oks, vec![true, false]);
}

#[tokio::test]
async fn a_connection_dropped_mid_message_is_a_temporary_error_and_the_message_unfinished() {
    let mut steps = login_steps(&["UIDL"]);
    steps.extend([
        expect_alone("RETR 1"),
        message(&msg(1)),
        expect_alone("RETR 2"),
        partial(&msg(2), 12),
        Step::Close,
    ]);
    let (rec, err) = scripted(steps, async |io| {
        let mut s = logged_in(io).await;
        let mut rec = Recorded::default();
        let err = s
            .retrieve(&[MsgNum(1), MsgNum(2)], &mut rec)
            .await
            .unwrap_err();
        (rec, err)
    })
    .await;
    assert!(err.is_transient(), "{err}");
    assert_eq!(rec.messages, vec![(MsgNum(1), msg(1))]);
    assert!(
        rec.current.is_some(),
        "message 2 started but never finished"
    );
}

#[tokio::test]
async fn capabilities_shown_only_after_login_are_seen() {
    let mut steps = greeting(&["USER"]);
    steps.extend([
        expect("USER me"),
        send("+OK"),
        expect("PASS secret"),
        send("+OK"),
        expect("CAPA"),
        send("+OK\r\nUIDL\r\nPIPELINING\r\nLOGIN-DELAY 900\r\n."),
    ]);
    scripted(steps, async |io| {
        let s = logged_in(io).await;
        assert!(!s.capabilities_before_login().pipelining);
        assert!(s.pipelining());
        assert_eq!(s.capabilities().login_delay, Some(900));
    })
    .await;
}
