//! Where an order is in its life: `pending` until it is paid or cancelled, and then final.

use serde::Serialize;
use utoipa::ToSchema;

/// `pending → paid | cancelled`; `paid` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Paid,
    Cancelled,
}

impl Status {
    /// As stored (the database's check constraint lists the same words) and as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "paid" => Some(Self::Paid),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether an order in this status may move to `next`.
    pub fn may_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Pending, Self::Paid) | (Self::Pending, Self::Cancelled)
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_orders_move_on() {
        let all = [Status::Pending, Status::Paid, Status::Cancelled];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|from| all.iter().map(move |to| (*from, *to)))
            .filter(|(from, to)| from.may_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Status::Pending, Status::Paid),
                (Status::Pending, Status::Cancelled)
            ]
        );
    }

    #[test]
    fn statuses_read_back_as_written() {
        for status in [Status::Pending, Status::Paid, Status::Cancelled] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("Pending"), None);
    }
}
