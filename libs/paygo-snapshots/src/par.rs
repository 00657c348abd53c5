//! Portfolio at risk (docs/domain.md §2): the buckets of consecutive days in arrears that PAR is
//! reported by.

/// The PAR buckets by consecutive days in arrears, and one for rows without that value:
/// (name, first day, last day; `None` = no upper bound).
pub const PAR_BUCKETS: [(&str, u32, Option<u32>); 8] = [
    ("0", 0, Some(0)),
    ("1-7", 1, Some(7)),
    ("8-30", 8, Some(30)),
    ("31-60", 31, Some(60)),
    ("61-90", 61, Some(90)),
    ("91-180", 91, Some(180)),
    ("180+", 181, None),
    ("unknown", 0, None),
];

/// The index in [`PAR_BUCKETS`] of the bucket for rows without consecutive days in arrears.
pub const UNKNOWN_BUCKET: u8 = 7;

/// The index in [`PAR_BUCKETS`] of a number of consecutive days in arrears (negative counts as
/// 0; `None`: unknown).
pub fn par_bucket(days: Option<i64>) -> u8 {
    let Some(days) = days else {
        return UNKNOWN_BUCKET;
    };
    let days = days.max(0);
    PAR_BUCKETS[..7]
        .iter()
        .position(|(_, from, to)| {
            days >= i64::from(*from) && to.is_none_or(|to| days <= i64::from(to))
        })
        .map_or(UNKNOWN_BUCKET, |i| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_of_consecutive_days_in_arrears() {
        let cases = [
            (None, "unknown"),
            (Some(-3), "0"),
            (Some(0), "0"),
            (Some(1), "1-7"),
            (Some(7), "1-7"),
            (Some(8), "8-30"),
            (Some(30), "8-30"),
            (Some(31), "31-60"),
            (Some(61), "61-90"),
            (Some(91), "91-180"),
            (Some(180), "91-180"),
            (Some(181), "180+"),
        ];
        for (days, name) in cases {
            assert_eq!(
                PAR_BUCKETS[usize::from(par_bucket(days))].0,
                name,
                "{days:?}"
            );
        }
    }
}
