//! A job's events on `letterpress.events.<job>`: numbered 1, 2, … per job like the SQLite
//! store's, appended with an expected-last-subject-sequence check so that two writers (the
//! worker, and a node writing a missing terminal event) never give two events one number.
//! Live copies go out on core subjects for the nodes' event streams.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Inner, err, is_terminal_kind};
use crate::store::{StoreError, StoredEvent};

#[derive(Serialize, Deserialize)]
struct Wire {
    seq: i64,
    kind: String,
    data: Value,
}

fn events_subject(job: &str) -> String {
    format!("letterpress.events.{job}")
}

impl Inner {
    /// Appends an event and answers its number; with `only_if_no_terminal`, `None` (nothing
    /// written) when the job has a terminal event already.
    pub(super) async fn append_event(
        &self,
        job: &str,
        kind: &str,
        data: &Value,
        only_if_no_terminal: bool,
    ) -> Result<Option<i64>, StoreError> {
        let subject = events_subject(job);
        loop {
            let (last_stream_seq, last_seq) = if only_if_no_terminal {
                let events = self.read_events(job).await?;
                if events.iter().any(|(_, e)| is_terminal_kind(&e.kind)) {
                    return Ok(None);
                }
                events.last().map_or((0, 0), |(s, e)| (*s, e.seq))
            } else {
                self.last_event(&subject).await?
            };
            let wire = Wire {
                seq: last_seq + 1,
                kind: kind.into(),
                data: data.clone(),
            };
            let publish = PublishMessage::build()
                .payload(serde_json::to_vec(&wire)?.into())
                .expected_last_subject_sequence(last_stream_seq);
            let sent = self.js.send_publish(subject.clone(), publish).await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => return Err(err("storing an event")(e)),
            };
            match acked {
                Ok(_) => return Ok(Some(wire.seq)),
                // Someone appended first: number it again.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                Err(e) => return Err(err("storing an event")(e)),
            }
        }
    }

    /// The stream sequence and event number of the job's last event; zeros when it has none.
    async fn last_event(&self, subject: &str) -> Result<(u64, i64), StoreError> {
        match self.events.get_last_raw_message_by_subject(subject).await {
            Ok(message) => {
                let wire: Wire = serde_json::from_slice(&message.payload)?;
                Ok((message.sequence, wire.seq))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
            Err(e) => Err(err("reading events")(e)),
        }
    }

    /// Every stored event of the job, with its stream sequence.
    async fn read_events(&self, job: &str) -> Result<Vec<(u64, StoredEvent)>, StoreError> {
        let subject = events_subject(job);
        let mut events = Vec::new();
        let mut from = 1;
        loop {
            let message = self
                .events
                .direct_get_next_for_subject(subject.clone(), Some(from))
                .await;
            let message = match message {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(events),
                Err(e) => return Err(err("reading events")(e)),
            };
            from = message.sequence + 1;
            let wire: Wire = serde_json::from_slice(&message.payload)?;
            events.push((
                message.sequence,
                StoredEvent {
                    seq: wire.seq,
                    kind: wire.kind,
                    data: wire.data,
                },
            ));
        }
    }

    pub(super) async fn events_after(
        &self,
        job: &str,
        after: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let events = self.read_events(job).await?;
        Ok(events
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.seq > after)
            .collect())
    }

    pub(super) async fn publish_live(&self, job: &str, seq: i64, kind: &str, data: &Value) {
        let wire = Wire {
            seq,
            kind: kind.into(),
            data: data.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&wire) else {
            return;
        };
        if let Err(e) = self
            .client
            .publish(format!("letterpress.live.{job}"), payload.into())
            .await
        {
            tracing::warn!(job, error = %e, "publishing a live event");
        }
    }

    pub(super) async fn forward_live(&self, on_event: impl Fn(&str, i64, String, Value)) {
        let mut live = match self.client.subscribe(super::LIVE_SUBJECTS).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "subscribing to live events");
                return;
            }
        };
        while let Some(message) = live.next().await {
            let job = message
                .subject
                .as_str()
                .trim_start_matches("letterpress.live.");
            if let Ok(wire) = serde_json::from_slice::<Wire>(&message.payload) {
                on_event(job, wire.seq, wire.kind, wire.data);
            }
        }
    }

    pub(super) async fn forward_cancels(&self, on_cancel: impl Fn(&str)) {
        let mut cancels = match self.client.subscribe(super::CANCEL_SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "subscribing to cancels");
                return;
            }
        };
        while let Some(message) = cancels.next().await {
            on_cancel(&String::from_utf8_lossy(&message.payload));
        }
    }
}
