//! The IMAP client against a scripted server that checks every line it sends: what a real
//! server will not do on demand (refuse before a literal, an OAuth error challenge, replies
//! out of the usual order, answers it should not give).

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::*;
use crate::pop3::script::{Step, expect, expect_alone, send, serve};
use crate::pop3::{Secret, Timeouts, TlsOptions};

fn options() -> ConnectOptions {
    ConnectOptions {
        host: "imap.example.net".into(),
        port: 993,
        security: Security::Tls,
        tls: TlsOptions::default(),
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
    }
}

/// Runs `client` against `steps`; panics with the transcript if the client strays.
async fn with_script<T>(steps: Vec<Step>, client: impl AsyncFnOnce(Client) -> T) -> T {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(serve(theirs, steps));
    let session = over(Box::new(ours), &options()).await.unwrap();
    let out = client(session).await;
    server.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    out
}

fn login_steps(caps: &str) -> Vec<Step> {
    let response = plain_response(&credentials()).expose().to_owned();
    vec![
        send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready"),
        expect(&format!("p1 AUTHENTICATE PLAIN {response}")),
        send(&format!("p1 OK [CAPABILITY {caps}] Logged in")),
    ]
}

fn credentials() -> Credentials {
    Credentials::password("me", Secret::new("pw"))
}

const M1: &[u8] = b"Subject: one\r\n\r\nbody\r\n";
const M2: &[u8] = b"Subject: two\r\n\r\n.\r\n";

fn messages<'a>(data: &'a mut [std::io::Cursor<&'static [u8]>]) -> Vec<Message<'a>> {
    data.iter_mut()
        .map(|c| {
            let len = c.get_ref().len() as u64;
            Message {
                data: c,
                len,
                date: Some("07-Mar-2026 09:05:01 -0130".into()),
            }
        })
        .collect()
}

#[tokio::test]
async fn a_batch_goes_in_one_multiappend_with_literal_plus_and_gets_its_uids() {
    let mut steps = login_steps("IMAP4rev1 MULTIAPPEND LITERAL+ UIDPLUS");
    steps.extend([
        expect("p2 APPEND \"INBOX\" () \"07-Mar-2026 09:05:01 -0130\" {22+}"),
        expect("Subject: one"),
        expect(""),
        expect("body"),
        expect(" () \"07-Mar-2026 09:05:01 -0130\" {19+}"),
        expect("Subject: two"),
        expect(""),
        expect("."),
        expect_alone(""),
        send("* 2 EXISTS"),
        send("p2 OK [APPENDUID 7 10:11] Append completed."),
    ]);
    let results = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        assert_eq!(
            c.mode,
            AppendMode {
                multi: true,
                literal_plus: true,
                literal_minus: false
            }
        );
        let mut data = [std::io::Cursor::new(M1), std::io::Cursor::new(M2)];
        let mut sent = 0;
        c.append("INBOX", &mut messages(&mut data), &mut || sent += 1)
            .await
            .map(|r| (r, sent))
    })
    .await
    .unwrap();
    assert_eq!(
        results,
        (
            vec![
                Ok(Appended::Uid {
                    validity: 7,
                    uid: 10
                }),
                Ok(Appended::Uid {
                    validity: 7,
                    uid: 11
                })
            ],
            1
        )
    );
}

#[tokio::test]
async fn without_literal_plus_each_literal_waits_for_the_go_ahead_and_a_refusal_sends_nothing() {
    let mut steps = login_steps("IMAP4rev1");
    steps.extend([
        // The first waits for "+", then goes.
        expect_alone("p2 APPEND \"Lists\" () \"07-Mar-2026 09:05:01 -0130\" {22}"),
        send("+ Ready for literal data"),
        expect("Subject: one"),
        expect(""),
        expect("body"),
        expect(""),
        // The second is refused instead of "+": its data is never sent.
        expect_alone("p3 APPEND \"Lists\" () \"07-Mar-2026 09:05:01 -0130\" {19}"),
        send("p2 OK Append completed."),
        send("p3 NO [OVERQUOTA] Quota exceeded"),
    ]);
    let results = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        let mut data = [std::io::Cursor::new(M1), std::io::Cursor::new(M2)];
        c.append("Lists", &mut messages(&mut data), &mut || {})
            .await
    })
    .await
    .unwrap();
    assert_eq!(results[0], Ok(Appended::Stored));
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(refused.code_name().as_deref(), Some("OVERQUOTA"));
}

#[tokio::test]
async fn a_refused_multiappend_refuses_every_message_of_it() {
    let mut steps = login_steps("IMAP4rev1 MULTIAPPEND LITERAL+");
    steps.extend([
        expect("p2 APPEND \"INBOX\" () \"07-Mar-2026 09:05:01 -0130\" {22+}"),
        expect("Subject: one"),
        expect(""),
        expect("body"),
        expect(" () \"07-Mar-2026 09:05:01 -0130\" {19+}"),
        expect("Subject: two"),
        expect(""),
        expect("."),
        expect_alone(""),
        send("p2 NO [TRYCREATE] Mailbox doesn't exist: INBOX"),
    ]);
    let results = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        let mut data = [std::io::Cursor::new(M1), std::io::Cursor::new(M2)];
        c.append("INBOX", &mut messages(&mut data), &mut || {})
            .await
    })
    .await
    .unwrap();
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().unwrap_err().code_name().as_deref() == Some("TRYCREATE"))
    );
}

#[tokio::test]
async fn an_oauth_error_challenge_is_acknowledged_and_its_reason_told() {
    let token = Credentials::token("me@example.com", Secret::new("tok"));
    let response = xoauth2_response(&token).expose().to_owned();
    let steps = vec![
        send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=PLAIN] Gimap ready"),
        expect(&format!("p1 AUTHENTICATE XOAUTH2 {response}")),
        // {"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}
        send(
            "+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
        ),
        expect_alone(""),
        send("p1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)"),
    ];
    let e = with_script(steps, async |mut c: Client| {
        c.login(&token, None).await.unwrap_err()
    })
    .await;
    let text = e.to_string();
    assert!(matches!(e, Error::Login { .. }), "{e:?}");
    assert!(
        text.contains("AUTHENTICATE XOAUTH2")
            && text.contains("Invalid credentials")
            && text.contains("\"status\":\"401\""),
        "{text}"
    );
    assert!(!text.contains("tok"), "{text}");
}

#[tokio::test]
async fn fetched_bodies_are_hashed_by_uid_whatever_else_the_server_says() {
    let mut steps = login_steps("IMAP4rev1 UIDPLUS");
    steps.extend([
        expect("p2 EXAMINE \"INBOX\""),
        send("* 4 EXISTS"),
        send("* OK [UIDVALIDITY 77] UIDs valid"),
        send("p2 OK [READ-ONLY] Examine completed"),
        expect("p3 UID SEARCH UID 5:* HEADER Message-ID \"a@b\""),
        send("* SEARCH 5 9"),
        send("p3 OK Search completed"),
        expect("p4 UID FETCH 5,9 (UID BODY.PEEK[])"),
        // An unasked-for flag update, a body before its UID, a body after it.
        send("* 3 FETCH (FLAGS (\\Seen))"),
        Step::Send(b"* 4 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n".to_vec()),
        Step::Send(b"* 5 FETCH (BODY[] {2}\r\nxy UID 9)\r\n".to_vec()),
        send("p4 OK Fetch completed"),
    ]);
    let (validity, uids, digests) = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        let validity = c.examine("INBOX").await.unwrap();
        let uids = c
            .uid_search("UID 5:* HEADER Message-ID \"a@b\"")
            .await
            .unwrap();
        let digests = c.digests(&uids).await.unwrap();
        (validity, uids, digests)
    })
    .await;
    assert_eq!(validity, 77);
    assert_eq!(uids, vec![5, 9]);
    let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    assert_eq!(digests, vec![(5, sha(b"abc"), 3), (9, sha(b"xy"), 2)]);
}

#[tokio::test]
async fn status_reads_a_mailbox_name_sent_as_a_literal() {
    let mut steps = login_steps("IMAP4rev1");
    steps.extend([
        expect("p2 STATUS \"&AMQ-pfel\" (UIDVALIDITY UIDNEXT)"),
        Step::Send(b"* STATUS {8}\r\n\xc3\x84pfel (UIDNEXT 12 UIDVALIDITY 3)\r\n".to_vec()),
        send("p2 OK Status completed"),
    ]);
    let status = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        c.status("Äpfel").await
    })
    .await
    .unwrap();
    assert_eq!(status, (3, 12));
}

#[tokio::test]
async fn a_hostile_or_broken_server_is_an_error_not_a_hang() {
    // BYE instead of a greeting.
    let e = {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(serve(theirs, vec![send("* BYE Too many connections")]));
        let e = over(Box::new(ours), &options()).await.unwrap_err();
        server.await.unwrap().unwrap();
        e
    };
    assert!(
        matches!(&e, Error::Bye(t) if t.contains("Too many")),
        "{e:?}"
    );
    assert!(e.is_transient());

    // A tagged answer to a command never sent, and garbage.
    let mut steps = login_steps("IMAP4rev1");
    steps.extend([
        expect("p2 STATUS \"INBOX\" (UIDVALIDITY UIDNEXT)"),
        send("zz9 OK what"),
    ]);
    let e = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        c.status("INBOX").await.unwrap_err()
    })
    .await;
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");

    let mut steps = login_steps("IMAP4rev1");
    steps.extend([
        expect("p2 STATUS \"INBOX\" (UIDVALIDITY UIDNEXT)"),
        send("p2 MAYBE"),
    ]);
    let e = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        let e = c.status("INBOX").await.unwrap_err();
        assert!(c.is_broken());
        e
    })
    .await;
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");

    // A STATUS answer without its numbers.
    let mut steps = login_steps("IMAP4rev1");
    steps.extend([
        expect("p2 STATUS \"INBOX\" (UIDVALIDITY UIDNEXT)"),
        send("* STATUS INBOX ()"),
        send("p2 OK done"),
    ]);
    let e = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        c.status("INBOX").await.unwrap_err()
    })
    .await;
    assert!(matches!(e, Error::Protocol(_)), "{e:?}");
}

#[tokio::test]
async fn with_literal_minus_only_literals_up_to_4096_bytes_go_without_waiting() {
    static BIG: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| format!("{}\r\n", "x".repeat(98)).repeat(50).into_bytes());
    let mut steps = login_steps("IMAP4rev1 LITERAL-");
    steps.extend([
        expect("p2 APPEND \"INBOX\" () {22+}"),
        expect("Subject: one"),
        expect(""),
        expect("body"),
        expect(""),
        expect_alone("p3 APPEND \"INBOX\" () {5000}"),
        send("p2 OK [APPENDUID 9 4] done"),
        send("+ go ahead"),
    ]);
    steps.extend((0..50).map(|_| expect(&"x".repeat(98))));
    steps.extend([expect_alone(""), send("p3 OK [APPENDUID 9 5] done")]);
    let results = with_script(steps, async |mut c: Client| {
        c.login(&credentials(), None).await.unwrap();
        let mut small = std::io::Cursor::new(M1);
        let mut big = std::io::Cursor::new(BIG.as_slice());
        let mut messages = [
            Message {
                data: &mut small,
                len: M1.len() as u64,
                date: None,
            },
            Message {
                data: &mut big,
                len: BIG.len() as u64,
                date: None,
            },
        ];
        c.append("INBOX", &mut messages, &mut || {}).await
    })
    .await
    .unwrap();
    assert_eq!(
        results,
        vec![
            Ok(Appended::Uid {
                validity: 9,
                uid: 4
            }),
            Ok(Appended::Uid {
                validity: 9,
                uid: 5
            })
        ]
    );
}
