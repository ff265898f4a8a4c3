//! Identifiers assigned by the server. The engine only compares and hashes them.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A bid or an ask. Unique among the orders resting in one book.
    OrderId
);
id_type!(
    /// The account that owns an order; two orders of one owner never trade together.
    UserId
);
id_type!(
    /// The machine whose GPUs an ask offers. A bid's GPUs all come from one host.
    HostId
);
