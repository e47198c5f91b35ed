//! Calendar dates as day numbers (days since 1970-01-01, proleptic
//! Gregorian) and the text formats the agencies write them in. Timestamps
//! are local wall-clock time; no time zones.

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date {
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

impl Date {
    pub(crate) const fn new(year: i32, month: u32, day: u32) -> Self {
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    pub(crate) fn days(self) -> i64 {
        let m = i64::from(self.month);
        let d = i64::from(self.day);
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01 (Hinnant's `civil_from_days`).
    pub(crate) fn from_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date {
            year: year as i32,
            month: month as u32,
            day: day as u32,
        }
    }

    /// The same day `years` later (29 February becomes 28 February).
    pub(crate) fn plus_years(self, years: i32) -> Self {
        let year = self.year + years;
        let day = if self.month == 2 && self.day == 29 && !is_leap(year) {
            28
        } else {
            self.day
        };
        Date { year, day, ..self }
    }

    /// `YYYYMMDD`, as inside ID numbers and the registry's `CSRQ`.
    pub(crate) fn compact(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `YYYY-MM-DD`.
    pub(crate) fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `YYYY/M/D`, as spreadsheet exports write it.
    pub(crate) fn slashed(self) -> String {
        format!("{}/{}/{}", self.year, self.month, self.day)
    }

    /// `YYYY年M月D日`.
    pub(crate) fn chinese(self) -> String {
        format!("{}年{}月{}日", self.year, self.month, self.day)
    }
}

/// `YYYY-MM-DD HH:MM:SS` for a day number and a second of that day.
pub(crate) fn timestamp(days: i64, second_of_day: u32) -> String {
    let s = second_of_day % 86_400;
    format!(
        "{} {:02}:{:02}:{:02}",
        Date::from_days(days).iso(),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(Date::new(1970, 1, 1).days(), 0);
        assert_eq!(Date::new(2000, 3, 1).days(), 11_017);
        for d in Date::new(1899, 12, 25).days()..Date::new(2026, 1, 10).days() {
            assert_eq!(Date::from_days(d).days(), d);
        }
        assert_eq!(Date::new(2000, 2, 29).plus_years(1), Date::new(2001, 2, 28));
    }

    #[test]
    fn formats() {
        let d = Date::new(2015, 3, 8);
        assert_eq!(d.compact(), "20150308");
        assert_eq!(d.iso(), "2015-03-08");
        assert_eq!(d.slashed(), "2015/3/8");
        assert_eq!(d.chinese(), "2015年3月8日");
        assert_eq!(timestamp(0, 3661), "1970-01-01 01:01:01");
    }
}
