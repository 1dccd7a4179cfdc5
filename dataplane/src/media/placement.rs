//! Which worker carries each room (pure). A room stays on the worker it was
//! first placed on until it closes (its sessions must meet in one engine); a
//! new room goes to the least-loaded worker: fewest sessions, then fewest
//! rooms placed (sessions are counted only once a worker has opened them,
//! so rooms placed at the same moment still spread), then the lowest index.

use std::collections::HashMap;

use arc_events::RoomId;

/// The node's rooms and their workers.
#[derive(Debug, Default)]
pub struct Placement {
    rooms: HashMap<RoomId, usize>,
}

impl Placement {
    /// The worker of `room`, placing it if it is new. `sessions[w]` is
    /// worker `w`'s live sessions (its length is the number of workers).
    pub fn place(&mut self, room: &RoomId, sessions: &[u64]) -> usize {
        if let Some(w) = self.rooms.get(room) {
            return *w;
        }
        let mut rooms_on = vec![0u64; sessions.len().max(1)];
        for w in self.rooms.values() {
            if let Some(n) = rooms_on.get_mut(*w) {
                *n += 1;
            }
        }
        let w = (0..sessions.len().max(1))
            .min_by_key(|w| (sessions.get(*w).copied().unwrap_or(0), rooms_on[*w], *w))
            .unwrap_or(0);
        self.rooms.insert(room.clone(), w);
        w
    }

    /// The worker `room` is on, if placed.
    pub fn worker_of(&self, room: &RoomId) -> Option<usize> {
        self.rooms.get(room).copied()
    }

    /// Forgets `room` (it closed: its sessions ended).
    pub fn remove(&mut self, room: &RoomId) {
        self.rooms.remove(room);
    }

    /// Rooms placed.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is placed.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(i: usize) -> RoomId {
        RoomId::parse(&format!("rm_{i}")).expect("id")
    }

    #[test]
    fn new_rooms_go_to_the_least_loaded_worker_and_stay() {
        let mut p = Placement::default();
        // Placed at the same moment (no sessions counted yet): they alternate.
        let first: Vec<usize> = (0..4).map(|i| p.place(&room(i), &[0, 0])).collect();
        assert_eq!(first, vec![0, 1, 0, 1]);
        // A room stays where it is, whatever the load.
        assert_eq!(p.place(&room(0), &[100, 0]), 0);
        // Sessions weigh first: worker 0 carries a big room.
        assert_eq!(p.place(&room(10), &[40, 3]), 1);
        assert_eq!(p.place(&room(11), &[40, 30]), 1);
        assert_eq!(p.place(&room(12), &[20, 30]), 0);
        assert_eq!(p.worker_of(&room(11)), Some(1));
        assert_eq!(p.len(), 7);
    }

    #[test]
    fn a_closed_room_is_placed_anew() {
        let mut p = Placement::default();
        assert_eq!(p.place(&room(1), &[0, 0]), 0);
        p.remove(&room(1));
        assert!(p.is_empty());
        assert_eq!(p.place(&room(1), &[5, 0]), 1);
    }

    #[test]
    fn one_worker_takes_everything() {
        let mut p = Placement::default();
        assert_eq!(p.place(&room(1), &[7]), 0);
        assert_eq!(p.place(&room(2), &[]), 0);
    }
}
