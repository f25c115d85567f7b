//! The calendar date of a day counted from the Unix epoch (UTC, proleptic Gregorian): for
//! spend periods, HTTP dates and log timestamps alike.

/// Year, month (1-12) and day of month (1-31) of the day `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // Counted from 0000-03-01, so that the leap day ends a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // Both below 32 by construction.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days from 1970-01-01 to a date: the other direction, written the plain way (whole
    /// years, then months), to check the fast one against.
    fn days_from_civil(year: u64, month: u32, day: u32) -> u64 {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let mut days: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
        const MONTHS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        for m in 1..month {
            days += MONTHS[(m - 1) as usize] + u64::from(m == 2 && leap(year));
        }
        days + u64::from(day) - 1
    }

    /// Seeded days from 1970 to 9999 (leap days, century years, month and year ends included
    /// by the density of the draw), and the ends of that range: each date reads back to its
    /// day through the plain computation.
    #[test]
    fn every_day_reads_back() {
        let last = 2_932_896; // 9999-12-31
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(last), (9999, 12, 31));
        let mut x: u64 = 0x5eed;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let days = (x >> 11) % (last + 1);
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d), "{days}");
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
