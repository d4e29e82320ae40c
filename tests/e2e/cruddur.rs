//! The Cruddur backend as ten plugins: every route of CRUDDUR.md §1, its
//! mock data, validation codes and precedence, CORS, and one trace per
//! plugin.

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime};
use serde_json::{Value, json};

use crate::{
    harness::{CRUDDUR, Comb, Options, client, get_json, post_json, trace_id},
    otlp::{Receiver, named},
};

const FRONTEND: &str = "http://localhost:3000";

fn start() -> Comb {
    Comb::start(Options {
        plugins: CRUDDUR,
        env: &[("COMB_CORS_ALLOWED_ORIGINS", FRONTEND)],
        ..Default::default()
    })
}

fn aware(value: &Value) -> DateTime<FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a timestamp"));
    assert!(text.ends_with("+00:00"), "{text}");
    DateTime::parse_from_rfc3339(text).unwrap()
}

fn naive(value: &Value) -> NaiveDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a timestamp"));
    assert!(
        !text.contains('+') && !text.ends_with('Z'),
        "the user feed's timestamps have no offset: {text}"
    );
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").unwrap()
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn repeat(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_route_serves_the_mock_data() {
    let comb = start();

    let (status, home) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!((status, home.as_array().unwrap().len()), (200, 3));

    let (status, notifications) = get_json(&comb.at("/api/activities/notifications")).await;
    assert_eq!(status, 200);
    let [item] = notifications.as_array().unwrap().as_slice() else {
        panic!("{notifications}")
    };
    assert_eq!(
        (item["uuid"].as_str(), item["handle"].as_str()),
        (Some("68f126b0-1ceb-4a33-88be-d90fa7109eee"), Some("coco"))
    );
    assert_eq!(item["message"], "I am white unicorn");
    assert_eq!(
        (
            item["likes_count"].as_i64(),
            item["replies_count"].as_i64(),
            item["reposts_count"].as_i64()
        ),
        (Some(5), Some(1), Some(0))
    );
    assert_eq!(item["replies"][0]["handle"], "worf");
    assert_eq!(item["replies"][0]["message"], "this post has no honor!");
    assert_eq!(
        aware(&item["expires_at"]) - aware(&item["created_at"]),
        Duration::days(7)
    );

    let (status, user) = get_json(&comb.at("/api/activities/@andrewbrown")).await;
    assert_eq!(status, 200);
    let [item] = user.as_array().unwrap().as_slice() else {
        panic!("{user}")
    };
    assert_eq!(
        keys(item),
        ["created_at", "expires_at", "handle", "message", "uuid"]
    );
    assert_eq!(item["uuid"], "248959df-3079-4947-b847-9e0892d1bab4");
    assert_eq!(
        (item["handle"].as_str(), item["message"].as_str()),
        (Some("Andrew Brown"), Some("Cloud is fun!"))
    );
    assert_eq!(
        naive(&item["expires_at"]) - naive(&item["created_at"]),
        Duration::days(32)
    );

    let (status, found) = get_json(&comb.at("/api/activities/search?term=cloud")).await;
    assert_eq!(status, 200);
    let [item] = found.as_array().unwrap().as_slice() else {
        panic!("{found}")
    };
    assert_eq!(
        keys(item),
        ["created_at", "handle", "message", "uuid"],
        "search results have no expires_at"
    );
    assert_eq!(
        get_json(&comb.at("/api/activities/search")).await,
        (422, json!(["search_term_blank"]))
    );
    assert_eq!(
        get_json(&comb.at("/api/activities/search?term=")).await,
        (422, json!(["search_term_blank"]))
    );

    let (status, shown) =
        get_json(&comb.at("/api/activities/68f126b0-1ceb-4a33-88be-d90fa7109eee")).await;
    assert_eq!(
        status, 200,
        "the original always failed here; comb serves it"
    );
    let [item] = shown.as_array().unwrap().as_slice() else {
        panic!("{shown}")
    };
    assert_eq!(item["message"], "Cloud is fun!");
    let replies = item["replies"]
        .as_array()
        .expect("replies is a list, as the frontend expects");
    assert_eq!(
        (replies.len(), replies[0]["handle"].as_str()),
        (1, Some("Worf"))
    );

    let (status, groups) = get_json(&comb.at("/api/message_groups")).await;
    assert_eq!(status, 200);
    let uuids: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uuids,
        [
            "24b95582-9e7b-4e0a-9ad1-639773ab7552",
            "417c360e-c4e6-4fce-873b-d2d71469b4ac"
        ]
    );
    assert_eq!(groups[1]["display_name"], "Worf");

    let (status, messages) = get_json(&comb.at("/api/messages/@worf")).await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Cloud is fun!", "This platform is great!"]);
    assert_eq!(
        keys(&messages[0]),
        ["created_at", "display_name", "handle", "message", "uuid"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_segments_win_over_parameters() {
    let comb = start();
    let activities = |path: &str| comb.at(&format!("/api/activities/{path}"));
    assert_eq!(
        get_json(&activities("home"))
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        get_json(&activities("notifications")).await.1[0]["handle"],
        "coco"
    );
    assert_eq!(
        get_json(&activities("search")).await,
        (422, json!(["search_term_blank"]))
    );
    assert_eq!(
        get_json(&activities("@worf")).await.1[0]["uuid"],
        "248959df-3079-4947-b847-9e0892d1bab4"
    );
    // `@` alone is no handle: it falls through to the uuid route.
    assert_eq!(
        get_json(&activities("@")).await.1[0]["uuid"],
        "68f126b0-1ceb-4a33-88be-d90fa7109eee"
    );
    assert_eq!(get_json(&activities("home/")).await.0, 404);
    assert_eq!(get_json(&comb.at("/api/messages/worf")).await.0, 404);
    assert_eq!(get_json(&activities("some-uuid/reply")).await.0, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_activity_validates_like_the_original() {
    let comb = start();
    let url = comb.at("/api/activities");
    for (ttl, offset) in [
        ("30-days", Duration::days(30)),
        ("7-days", Duration::days(7)),
        ("3-days", Duration::days(3)),
        ("1-day", Duration::days(1)),
        ("12-hours", Duration::hours(12)),
        ("3-hours", Duration::hours(3)),
        ("1-hour", Duration::hours(1)),
    ] {
        let (status, created) =
            post_json(&url, &json!({"message": "Hello", "ttl": ttl}).to_string()).await;
        assert_eq!(status, 200, "{ttl}: {created}");
        assert_eq!(
            keys(&created),
            [
                "created_at",
                "display_name",
                "expires_at",
                "handle",
                "message",
                "uuid"
            ]
        );
        assert_eq!(
            (created["handle"].as_str(), created["display_name"].as_str()),
            (Some("andrewbrown"), Some("Andrew Brown"))
        );
        assert_eq!(
            aware(&created["expires_at"]) - aware(&created["created_at"]),
            offset,
            "{ttl}"
        );
        assert_eq!(created["uuid"].as_str().unwrap().len(), 36);
    }
    let cases = [
        (json!({"message": "Hello", "ttl": "2-weeks"}), "ttl_blank"),
        (json!({"message": "Hello", "ttl": null}), "ttl_blank"),
        (json!({"message": "Hello"}), "ttl_blank"),
        (json!({"message": "", "ttl": "7-days"}), "message_blank"),
        (json!({"message": null, "ttl": "7-days"}), "message_blank"),
        (json!({"ttl": "7-days"}), "message_blank"),
        // Every check overwrites the last: the message's error wins.
        (json!({"message": "", "ttl": "bogus"}), "message_blank"),
        (json!({}), "message_blank"),
        (
            json!({"message": repeat('é', 281), "ttl": "7-days"}),
            "message_exceed_max_chars",
        ),
        (
            json!({"message": repeat('é', 281), "ttl": "bogus"}),
            "message_exceed_max_chars",
        ),
    ];
    for (body, code) in cases {
        assert_eq!(
            post_json(&url, &body.to_string()).await,
            (422, json!([code])),
            "{body}"
        );
    }
    // 280 characters are fine however many bytes they take.
    let (status, created) = post_json(
        &url,
        &json!({"message": repeat('é', 280), "ttl": "1-day"}).to_string(),
    )
    .await;
    assert_eq!(
        (status, created["message"].as_str().unwrap().chars().count()),
        (200, 280)
    );

    let (status, body) = post_json(&url, "message=hello").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_reply_answers_422_not_500() {
    let comb = start();
    let url = comb.at("/api/activities/68f126b0-1ceb-4a33-88be-d90fa7109eee/reply");
    let (status, reply) = post_json(&url, r#"{"message": "Qapla'"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&reply),
        [
            "created_at",
            "display_name",
            "handle",
            "message",
            "reply_to_activity_uuid",
            "uuid"
        ]
    );
    assert_eq!(
        reply["reply_to_activity_uuid"],
        "68f126b0-1ceb-4a33-88be-d90fa7109eee"
    );
    assert_eq!(reply["message"], "Qapla'");
    assert_eq!(post_json(&url, "{}").await, (422, json!(["message_blank"])));
    assert_eq!(
        post_json(&url, r#"{"message": ""}"#).await,
        (422, json!(["message_blank"]))
    );
    assert_eq!(
        post_json(&url, &json!({"message": repeat('é', 1024)}).to_string())
            .await
            .0,
        200
    );
    assert_eq!(
        post_json(&url, &json!({"message": repeat('é', 1025)}).to_string()).await,
        (422, json!(["message_exceed_max_chars"]))
    );
    assert_eq!(post_json(&url, "{").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_message_validates_receiver_then_message() {
    let comb = start();
    let url = comb.at("/api/messages");
    let (status, sent) =
        post_json(&url, r#"{"message": "Hi", "user_receiver_handle": "worf"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        keys(&sent),
        ["created_at", "display_name", "handle", "message", "uuid"]
    );
    assert_eq!(sent["handle"], "andrewbrown");
    assert_eq!(
        post_json(&url, r#"{"message": "Hi"}"#).await,
        (422, json!(["user_reciever_handle_blank"]))
    );
    assert_eq!(
        post_json(&url, r#"{"user_receiver_handle": "worf"}"#).await,
        (422, json!(["message_blank"]))
    );
    assert_eq!(
        post_json(&url, "{}").await,
        (422, json!(["message_blank"])),
        "the last failing check wins"
    );
    let long = json!({"message": repeat('é', 1025), "user_receiver_handle": "worf"});
    assert_eq!(
        post_json(&url, &long.to_string()).await,
        (422, json!(["message_exceed_max_chars"]))
    );
    let longest = json!({"message": repeat('é', 1024), "user_receiver_handle": "worf"});
    assert_eq!(post_json(&url, &longest.to_string()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_headers_follow_the_original() {
    let comb = start();
    let preflight = client()
        .request(reqwest::Method::OPTIONS, comb.at("/api/activities"))
        .header("origin", FRONTEND)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], FRONTEND);
    assert_eq!(
        headers["access-control-allow-methods"],
        "OPTIONS,GET,HEAD,POST"
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,if-modified-since"
    );

    let response = client()
        .get(comb.at("/api/activities/home"))
        .header("origin", FRONTEND)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(
        response.headers()["access-control-expose-headers"],
        "location,link,traceresponse"
    );

    let stranger = client()
        .get(comb.at("/api/activities/home"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plugin_traces_under_its_own_name() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: CRUDDUR,
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Default::default()
    });
    // One request per plugin: (method, path, body, plugin, its span, lists?).
    let requests = [
        (
            "GET",
            "/api/activities/home",
            "",
            "home_activities",
            "home-activites-mock-data",
            true,
        ),
        (
            "GET",
            "/api/activities/notifications",
            "",
            "notifications_activities",
            "notifications-activities-mock-data",
            true,
        ),
        (
            "GET",
            "/api/activities/@andrewbrown",
            "",
            "user_activities",
            "mock-data",
            true,
        ),
        (
            "GET",
            "/api/activities/search?term=cloud",
            "",
            "search_activities",
            "search-activities-mock-data",
            true,
        ),
        (
            "GET",
            "/api/activities/68f126b0-1ceb-4a33-88be-d90fa7109eee",
            "",
            "show_activity",
            "show-activity-mock-data",
            true,
        ),
        (
            "POST",
            "/api/activities",
            r#"{"message":"hi","ttl":"1-day"}"#,
            "create_activity",
            "create-activity",
            false,
        ),
        (
            "POST",
            "/api/activities/x/reply",
            r#"{"message":"hi"}"#,
            "create_reply",
            "create-reply",
            false,
        ),
        (
            "GET",
            "/api/message_groups",
            "",
            "message_groups",
            "message-groups-mock-data",
            true,
        ),
        (
            "GET",
            "/api/messages/@worf",
            "",
            "messages",
            "messages-mock-data",
            true,
        ),
        (
            "POST",
            "/api/messages",
            r#"{"message":"hi","user_receiver_handle":"worf"}"#,
            "create_message",
            "create-message",
            false,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (method, path, body, plugin, span_name, lists) in requests {
        let request = client()
            .request(method.parse().unwrap(), comb.at(path))
            .body(body.to_owned());
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let trace = trace_id(&response);
        let spans = receiver.trace(&trace, 3).await;
        for span in &spans {
            assert_eq!(span.string("plugin.name"), plugin, "{span:#?}");
        }
        let guest = named(&spans, span_name);
        assert!(!guest.string("app.now").is_empty());
        if lists {
            assert!(guest.int("app.result_length") >= 1, "{guest:#?}");
        }
        seen.insert(plugin);
    }
    assert_eq!(seen.len(), 10, "ten rows when grouped by plugin.name");

    // A validation failure is an error status and a code, not an exception.
    let response = client()
        .post(comb.at("/api/messages"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let trace = trace_id(&response);
    let spans = receiver.trace(&trace, 3).await;
    let guest = named(&spans, "create-message");
    assert_eq!(guest.status_code, 2);
    assert_eq!(guest.string("app.error_code"), "message_blank");
    assert!(guest.event("exception").is_none());
    assert_eq!(
        named(&spans, "POST /api/messages").status_code,
        0,
        "a 4xx leaves the server span unset"
    );
}
