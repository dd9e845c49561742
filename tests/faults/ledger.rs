//! What Pipedrive's inbox ended up with, measured against what customers sent: messages lost,
//! messages delivered twice, and order within each conversation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::deployment::parse_text;
use crate::fake_pipedrive::Receive;

/// The measurement of one run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages customers sent (and the service acknowledged).
    pub expected: usize,
    /// Of those, messages Pipedrive took at least once.
    pub delivered: usize,
    /// Texts never taken.
    pub lost: Vec<String>,
    /// Takes of a (message, status) Pipedrive had already taken.
    pub duplicates: usize,
    /// Message ids taken more than once.
    pub duplicated_ids: HashSet<String>,
    /// Messages taken before an earlier message of their conversation.
    pub out_of_order: usize,
    /// Delivery calls made, whatever the answer.
    pub calls: usize,
}

impl Tally {
    /// Compares the inbox with the `expected` texts (made by `deployment::text`).
    pub fn of(receives: &[Receive], expected: &[String]) -> Self {
        let accepted: Vec<&Receive> = receives.iter().filter(|r| r.answer == 200).collect();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for r in &accepted {
            *seen.entry((r.id.as_str(), r.status.as_str())).or_default() += 1;
        }
        let duplicated_ids: HashSet<String> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((id, _), _)| id.to_string())
            .collect();
        let duplicates = seen.values().map(|n| n - 1).sum();
        let taken: HashSet<&str> = accepted.iter().map(|r| r.message.as_str()).collect();
        let lost: Vec<String> = expected
            .iter()
            .filter(|t| !taken.contains(t.as_str()))
            .cloned()
            .collect();
        // Order: the first take of each message, per conversation, in arrival order.
        let mut first_takes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut counted: HashSet<&str> = HashSet::new();
        for r in &accepted {
            if let Some((c, m)) = parse_text(&r.message)
                && counted.insert(r.id.as_str())
            {
                first_takes.entry(c).or_default().push(m);
            }
        }
        let out_of_order = first_takes
            .values()
            .map(|ms| ms.windows(2).filter(|w| w[1] < w[0]).count())
            .sum();
        Self {
            expected: expected.len(),
            delivered: expected.len() - lost.len(),
            lost,
            duplicates,
            duplicated_ids,
            out_of_order,
            calls: receives.len(),
        }
    }

    /// Nothing lost, nothing twice, order kept.
    pub fn assert_exact(&self) {
        assert!(self.lost.is_empty(), "lost: {self}");
        assert_eq!(self.duplicates, 0, "duplicates: {self}");
        assert_eq!(self.out_of_order, 0, "order: {self}");
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {} delivered {} lost {} duplicates {} out-of-order {} calls {}",
            self.expected,
            self.delivered,
            self.lost.len(),
            self.duplicates,
            self.out_of_order,
            self.calls
        )?;
        if !self.lost.is_empty() {
            write!(f, " (lost e.g. {:?})", &self.lost[..self.lost.len().min(5)])?;
        }
        Ok(())
    }
}

/// Prints one measured line per scenario (shown with `--nocapture`, kept for RELIABILITY.md).
pub fn report(scenario: &str, line: impl fmt::Display) {
    println!("[fault] {scenario}: {line}");
}
