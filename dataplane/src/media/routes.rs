//! Which worker owns which ICE ufrag: the one table workers share. It is read
//! only for the first datagrams of a flow (a STUN check arriving at a socket
//! of another worker, or the first frame of an ICE-TCP connection) and
//! written when a leg opens or ends — never on the packet path, so a plain
//! mutex serves.

use std::collections::HashMap;
use std::sync::Mutex;

/// ufrag → worker index.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    ufrags: Mutex<HashMap<String, usize>>,
}

impl Routes {
    pub(crate) fn set(&self, ufrag: &str, worker: usize, owned: bool) {
        if let Ok(mut map) = self.ufrags.lock() {
            if owned {
                map.insert(ufrag.to_owned(), worker);
            } else if map.get(ufrag) == Some(&worker) {
                map.remove(ufrag);
            }
        }
    }

    pub(crate) fn owner(&self, ufrag: &str) -> Option<usize> {
        self.ufrags.lock().ok()?.get(ufrag).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_come_and_go() {
        let r = Routes::default();
        r.set("u1", 1, true);
        assert_eq!(r.owner("u1"), Some(1));
        // Another worker's end does not remove this worker's ufrag.
        r.set("u1", 0, false);
        assert_eq!(r.owner("u1"), Some(1));
        r.set("u1", 1, false);
        assert_eq!(r.owner("u1"), None);
    }
}
