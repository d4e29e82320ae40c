// Cruddur's `NotificationsActivities` service in JavaScript, traced with
// OpenTelemetry's own API, served beside the Rust plugin so the two
// compare side by side.

import { trace } from '@opentelemetry/api';
import { Plugin } from 'comb';

const tracer = trace.getTracer('notifications.activities');

/** What Python's `datetime.isoformat()` prints for a UTC time. */
function isoformat(date) {
  return date.toISOString().replace('Z', '000+00:00');
}

function run() {
  return tracer.startActiveSpan('notifications-activities-mock-data', (span) => {
    const now = new Date();
    const at = (days) => isoformat(new Date(now.getTime() + days * 86_400_000));
    span.setAttribute('app.now', isoformat(now));
    const results = [
      {
        uuid: '68f126b0-1ceb-4a33-88be-d90fa7109eee',
        handle: 'coco',
        message: 'I am white unicorn',
        created_at: at(-2),
        expires_at: at(5),
        likes_count: 5,
        replies_count: 1,
        reposts_count: 0,
        replies: [
          {
            uuid: '26e12864-1c26-5c3a-9658-97a10f8fea67',
            reply_to_activity_uuid: '68f126b0-1ceb-4a33-88be-d90fa7109eee',
            handle: 'worf',
            message: 'this post has no honor!',
            likes_count: 0,
            replies_count: 0,
            reposts_count: 0,
            created_at: at(-2),
          },
        ],
      },
    ];
    span.setAttribute('app.result_length', results.length);
    span.end();
    return results;
  });
}

const plugin = new Plugin('notifications_activities_js', '0.1.0', "Cruddur's notifications feed (mock data), in JavaScript");
plugin.route('GET', '/api/js/activities/notifications', () => run());

export const { manifest, handler } = plugin.exports();
