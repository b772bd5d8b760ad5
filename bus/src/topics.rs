//! The topic catalogue: every Kafka topic qzx uses, its name under the
//! configured prefix, its CloudEvents type, and whether it is compacted.
//! Nothing else in qzx spells a topic name.

/// One of qzx's topics (CONTRACT.md, section Kafka).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Events,
    Actions,
    Incidents,
    Tasks,
    Units,
    Escalations,
    DeadLetter,
    /// AVL reports ([`crate::model::PositionReport`]), keyed by unit id.
    /// Ingest writes them; the units topic is the router's alone.
    Positions,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::Events,
        Topic::Actions,
        Topic::Incidents,
        Topic::Tasks,
        Topic::Units,
        Topic::Escalations,
        Topic::DeadLetter,
        Topic::Positions,
    ];

    /// The name after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Events => "events",
            Topic::Actions => "actions",
            Topic::Incidents => "incidents",
            Topic::Tasks => "tasks",
            Topic::Units => "units",
            Topic::Escalations => "escalations",
            Topic::DeadLetter => "deadletter",
            Topic::Positions => "positions",
        }
    }

    /// `ce_type` of the records on this topic.
    pub fn ce_type(self) -> &'static str {
        match self {
            Topic::Events => "qzx.event.v1",
            Topic::Actions => "qzx.action.v1",
            Topic::Incidents => "qzx.incident.v1",
            Topic::Tasks => "qzx.task.v1",
            Topic::Units => "qzx.unit.v1",
            Topic::Escalations => "qzx.escalation.v1",
            Topic::DeadLetter => "qzx.deadletter.v1",
            Topic::Positions => "qzx.position.v1",
        }
    }

    /// Incidents and units keep the latest version per id; positions are a
    /// log like events.
    pub fn compacted(self) -> bool {
        matches!(self, Topic::Incidents | Topic::Units)
    }
}

/// Topic names under one prefix (`QZX_TOPIC_PREFIX`, default `qzx.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.suffix())
    }

    /// The topic a full name refers to, if it is one of ours.
    pub fn parse(&self, name: &str) -> Option<Topic> {
        let suffix = name.strip_prefix(&self.prefix)?;
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_under_a_prefix() {
        let topics = Topics::new("qzx.");
        for t in Topic::ALL {
            assert_eq!(topics.parse(&topics.name(t)), Some(t));
        }
        assert_eq!(topics.name(Topic::DeadLetter), "qzx.deadletter");
        assert_eq!(topics.parse("other.events"), None);
        assert_eq!(topics.parse("qzx.nope"), None);
    }
}
