//! Cruddur's activities as the feeds return them, and the mock feeds the
//! original's week-2 services hard-code.
//!
//! Typed rather than built with `json!`: a `serde_json::Value` tree is a
//! map insert and a key `String` per field, all allocated and freed in the
//! guest; serialising these structs writes the same bytes directly, which
//! took ~12 % off a fresh `home_activities` call's CPU (docs/performance.md).
//! The fields are in alphabetical order because the original's Flask
//! `jsonify` sorted keys, and so did the `json!` maps these replace: the
//! bytes on the wire are unchanged.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::time::{Duration, isoformat};

/// One activity (a "crud"), with its replies.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    /// ISO 8601, as Python's `isoformat()`.
    pub created_at: String,
    /// ISO 8601.
    pub expires_at: String,
    /// The author's handle (the mock data uses display names too).
    pub handle: &'static str,
    /// The like count as some of the original's mock activities spell it;
    /// others carry the three `*_count` fields instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likes: Option<u32>,
    /// Likes, on activities that carry the three counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likes_count: Option<u32>,
    /// The text.
    pub message: &'static str,
    /// Replies, oldest first.
    pub replies: Vec<Reply>,
    /// Replies, on activities that carry the three counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replies_count: Option<u32>,
    /// Reposts, on activities that carry the three counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reposts_count: Option<u32>,
    /// The activity's uuid.
    pub uuid: &'static str,
}

/// A reply to an activity.
#[derive(Debug, Clone, Serialize)]
pub struct Reply {
    /// ISO 8601.
    pub created_at: String,
    /// The author's handle.
    pub handle: &'static str,
    /// Likes.
    pub likes_count: u32,
    /// The text.
    pub message: &'static str,
    /// Replies to the reply.
    pub replies_count: u32,
    /// The activity replied to.
    pub reply_to_activity_uuid: &'static str,
    /// Reposts.
    pub reposts_count: u32,
    /// The reply's uuid.
    pub uuid: &'static str,
}

/// The first activity of the home and notifications feeds: a post with
/// one reply, its times relative to `now`.
fn with_one_reply(
    now: DateTime<Utc>,
    (handle, message): (&'static str, &'static str),
    (reply_handle, reply_message): (&'static str, &'static str),
) -> Activity {
    let at = |offset: Duration| isoformat(&(now + offset));
    Activity {
        uuid: "68f126b0-1ceb-4a33-88be-d90fa7109eee",
        handle,
        message,
        created_at: at(-Duration::days(2)),
        expires_at: at(Duration::days(5)),
        likes: None,
        likes_count: Some(5),
        replies_count: Some(1),
        reposts_count: Some(0),
        replies: vec![Reply {
            uuid: "26e12864-1c26-5c3a-9658-97a10f8fea67",
            reply_to_activity_uuid: "68f126b0-1ceb-4a33-88be-d90fa7109eee",
            handle: reply_handle,
            message: reply_message,
            likes_count: 0,
            replies_count: 0,
            reposts_count: 0,
            created_at: at(-Duration::days(2)),
        }],
    }
}

/// A post without replies, as the original's later mock activities are.
fn without_replies(
    now: DateTime<Utc>,
    uuid: &'static str,
    (handle, message): (&'static str, &'static str),
    (created, expires): (Duration, Duration),
) -> Activity {
    Activity {
        uuid,
        handle,
        message,
        created_at: isoformat(&(now - created)),
        expires_at: isoformat(&(now + expires)),
        likes: Some(0),
        likes_count: None,
        replies_count: None,
        reposts_count: None,
        replies: vec![],
    }
}

/// `HomeActivities.run`'s three activities.
pub fn home(now: DateTime<Utc>) -> [Activity; 3] {
    [
        with_one_reply(
            now,
            ("Andrew Brown", "Cloud is very fun!"),
            ("Worf", "This post has no honor!"),
        ),
        without_replies(
            now,
            "66e12864-8c26-4c3a-9658-95a10f8fea67",
            ("Worf", "I am out of prune juice"),
            (Duration::days(7), Duration::days(9)),
        ),
        without_replies(
            now,
            "248959df-3079-4947-b847-9e0892d1bab4",
            ("Garek", "My dear doctor, I am just simple tailor"),
            (Duration::hours(1), Duration::hours(12)),
        ),
    ]
}

/// `NotificationsActivities.run`'s one activity.
pub fn notifications(now: DateTime<Utc>) -> [Activity; 1] {
    [with_one_reply(
        now,
        ("coco", "I am white unicorn"),
        ("worf", "this post has no honor!"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The feeds' contents are checked against the original's in the e2e
    /// tests; here, that their keys come out sorted at every level, as the
    /// original's `jsonify` and the `json!` maps these structs replace put
    /// them: a `Value` (a sorted map) writes the same bytes back.
    #[test]
    fn the_feeds_write_their_keys_sorted_as_the_original_did() {
        let now = crate::time::now();
        let sorted = |text: String| {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap()
                .to_string()
        };
        let home = serde_json::to_string(&home(now)).unwrap();
        assert_eq!(home, sorted(home.clone()));
        let notifications = serde_json::to_string(&notifications(now)).unwrap();
        assert_eq!(notifications, sorted(notifications.clone()));
        assert!(
            home.contains(r#""likes_count":5,"message":"Cloud is very fun!""#),
            "{home}"
        );
    }
}
