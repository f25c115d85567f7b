//! Token budgets per gateway key and calendar period (UTC day, UTC month): what each key has
//! spent, refused once spent. A request is charged its borrow when admitted and settled with
//! its real usage like the tokens-per-minute bucket, so a budget may be overrun by the
//! requests in flight when it runs out, never by more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ClientId;
use super::limited::{LimitKind, Limited, Scope};
use crate::civil::civil_from_days;

const DAY_SECS: u64 = 86_400;

/// A key's budgets (None = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Tokens per UTC day.
    pub per_day: Option<u64>,
    /// Tokens per UTC calendar month.
    pub per_month: Option<u64>,
}

/// What a key has spent, as `/admin/keys` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Tokens charged today (UTC).
    pub today: u64,
    /// Tokens charged this month (UTC).
    pub this_month: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Ledger {
    day: u64,
    day_tokens: u64,
    month: u64,
    month_tokens: u64,
}

impl Ledger {
    /// Forgets the periods that are over at `now`.
    fn roll(&mut self, now: Period) {
        if self.day != now.day {
            self.day = now.day;
            self.day_tokens = 0;
        }
        if self.month != now.month {
            self.month = now.month;
            self.month_tokens = 0;
        }
    }
}

/// The budgets of every key with one, and what each spent.
#[derive(Debug, Default)]
pub struct SpendBook {
    budgets: HashMap<ClientId, Budget>,
    /// Shared with the books of the configurations before and after (a reload changes
    /// budgets, not what was spent).
    ledgers: Arc<Mutex<HashMap<ClientId, Ledger>>>,
}

impl SpendBook {
    /// A book for `budgets`; keys without any budget are still counted (for `/admin/keys`).
    pub fn new(budgets: HashMap<ClientId, Budget>) -> SpendBook {
        SpendBook {
            budgets,
            ledgers: Arc::default(),
        }
    }

    /// A book for `budgets` over what this one's keys spent so far.
    pub fn with_budgets(&self, budgets: HashMap<ClientId, Budget>) -> SpendBook {
        SpendBook {
            budgets,
            ledgers: Arc::clone(&self.ledgers),
        }
    }

    /// `client`'s budgets (none: unlimited).
    pub fn budget(&self, client: &ClientId) -> Budget {
        self.budgets.get(client).copied().unwrap_or_default()
    }

    /// Whether `client` is a key this book counts.
    pub fn counts(&self, client: &ClientId) -> bool {
        self.budgets.contains_key(client)
    }

    /// Refuses `client` once a budget of it is spent; else charges `amount` at once.
    pub fn admit(&self, client: &ClientId, amount: u64, at: SystemTime) -> Result<(), Limited> {
        let Some(budget) = self.budgets.get(client) else {
            return Ok(());
        };
        let now = Period::of(at);
        let mut ledgers = self.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
        let ledger = ledgers.entry(*client).or_default();
        ledger.roll(now);
        let refuse = |limit, retry_after| Limited {
            limit,
            retry_after,
            scope: Scope::Key,
        };
        if budget.per_day.is_some_and(|cap| ledger.day_tokens >= cap) {
            return Err(refuse(LimitKind::TokensPerDay, now.until_next_day));
        }
        if budget
            .per_month
            .is_some_and(|cap| ledger.month_tokens >= cap)
        {
            return Err(refuse(LimitKind::TokensPerMonth, now.until_next_month));
        }
        ledger.day_tokens = ledger.day_tokens.saturating_add(amount);
        ledger.month_tokens = ledger.month_tokens.saturating_add(amount);
        Ok(())
    }

    /// Adds `delta` (negative: a refund) to what `client` spent in the current periods.
    pub fn adjust(&self, client: &ClientId, delta: i64, at: SystemTime) {
        if !self.counts(client) {
            return;
        }
        let mut ledgers = self.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
        let ledger = ledgers.entry(*client).or_default();
        ledger.roll(Period::of(at));
        let apply = |n: u64| n.saturating_add_signed(delta);
        ledger.day_tokens = apply(ledger.day_tokens);
        ledger.month_tokens = apply(ledger.month_tokens);
    }

    /// What `client` spent in the periods current at `at`, and its budget.
    pub fn spent(&self, client: &ClientId, at: SystemTime) -> (Spent, Budget) {
        let budget = self.budgets.get(client).copied().unwrap_or_default();
        let mut ledgers = self.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ledger) = ledgers.get_mut(client) else {
            return (Spent::default(), budget);
        };
        ledger.roll(Period::of(at));
        let spent = Spent {
            today: ledger.day_tokens,
            this_month: ledger.month_tokens,
        };
        (spent, budget)
    }
}

/// The refusal of a spent day (`month` false) or month budget at `secs` since the epoch (by
/// Redis's clock, for the shared budgets).
pub(super) fn refused_at(month: bool, secs: u64) -> Limited {
    let period = Period::of(UNIX_EPOCH + Duration::from_secs(secs));
    let (limit, retry_after) = match month {
        false => (LimitKind::TokensPerDay, period.until_next_day),
        true => (LimitKind::TokensPerMonth, period.until_next_month),
    };
    Limited {
        limit,
        retry_after,
        scope: Scope::Key,
    }
}

/// The UTC day and month of an instant, and how long until each ends.
#[derive(Debug, Clone, Copy)]
struct Period {
    day: u64,
    month: u64,
    until_next_day: Duration,
    until_next_month: Duration,
}

impl Period {
    fn of(at: SystemTime) -> Period {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let day = secs / DAY_SECS;
        let (year, month, day_of_month) = civil_from_days(day);
        let days_in_month = days_in_month(year, month);
        let next_day_start = (day + 1) * DAY_SECS;
        let next_month_start = (day + u64::from(days_in_month - day_of_month) + 1) * DAY_SECS;
        Period {
            day,
            month: year * 12 + u64::from(month - 1),
            until_next_day: Duration::from_secs(next_day_start - secs),
            until_next_month: Duration::from_secs(next_month_start - secs),
        }
    }
}

fn days_in_month(year: u64, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn calendar_matches_known_dates() {
        // 2024-02-29 12:00 UTC (a leap day), 2026-12-31 23:59:59, 1970-01-01.
        for (secs, ymd, to_day, to_month) in [
            (1_709_208_000, (2024, 2, 29), 43_200, 43_200),
            (1_798_761_599, (2026, 12, 31), 1, 1),
            (0, (1970, 1, 1), DAY_SECS, 31 * DAY_SECS),
        ] {
            let p = Period::of(at(secs));
            assert_eq!(civil_from_days(secs / DAY_SECS), ymd, "{secs}");
            assert_eq!(p.until_next_day.as_secs(), to_day, "{secs}");
            assert_eq!(p.until_next_month.as_secs(), to_month, "{secs}");
        }
    }

    #[test]
    fn a_spent_budget_refuses_until_its_period_ends() {
        let key = ClientId::gateway_key("k");
        let book = SpendBook::new(HashMap::from([(
            key,
            Budget {
                per_day: Some(100),
                per_month: Some(250),
            },
        )]));
        let mut rng = fastrand::Rng::with_seed(7);
        let day0 = 20_000 * DAY_SECS; // 2024-10-04
        // Within one day: admitted while under 100, whatever the amounts.
        let mut spent = 0u64;
        loop {
            let amount = rng.u64(1..40);
            match book.admit(&key, amount, at(day0 + 10)) {
                Ok(()) => {
                    assert!(spent < 100);
                    spent += amount;
                }
                Err(l) => {
                    assert!(spent >= 100);
                    assert_eq!(l.limit, LimitKind::TokensPerDay);
                    assert_eq!(l.retry_after.as_secs(), DAY_SECS - 10);
                    break;
                }
            }
        }
        // A settle with less usage refunds and admits again; the next day starts afresh.
        book.adjust(&key, -i64::try_from(spent).unwrap(), at(day0 + 20));
        assert!(book.admit(&key, 1, at(day0 + 30)).is_ok());
        book.adjust(&key, 300, at(day0 + 40));
        let err = book.admit(&key, 1, at(day0 + DAY_SECS)).unwrap_err();
        assert_eq!(err.limit, LimitKind::TokensPerMonth);
        let (spent, _) = book.spent(&key, at(day0 + DAY_SECS));
        assert_eq!(spent.today, 0);
        assert_eq!(spent.this_month, 301);
        // Unbudgeted clients are never refused.
        let other = ClientId::gateway_key("other");
        assert!(book.admit(&other, u64::MAX, at(day0)).is_ok());
    }
}
