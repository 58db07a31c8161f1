//! Who may hold a connection to this node: at most
//! `gateway.max_connections_per_address` per client address, and at most
//! `gateway.max_hello_less` connections between their first packet and
//! their hello, the oldest of which is closed to make room for a new one
//! (so hello-less connections cannot keep a client that says hello out).
//! [`ConnBook`] decides (pure); [`Doors`] holds it for the gateway and
//! hands out slots that give themselves back when dropped.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The counts behind the decisions.
#[derive(Debug)]
pub struct ConnBook {
    per_address_cap: usize,
    hello_less_cap: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Hello-less connections, oldest first.
    waiting: VecDeque<u64>,
    next: u64,
}

impl ConnBook {
    pub fn new(per_address_cap: usize, hello_less_cap: usize) -> Self {
        ConnBook { per_address_cap, hello_less_cap: hello_less_cap.max(1), per_address: HashMap::new(), waiting: VecDeque::new(), next: 0 }
    }

    /// Counts a new connection from `ip`; `false` (nothing counted) past the
    /// cap (0: no cap).
    pub fn open(&mut self, ip: IpAddr) -> bool {
        let n = self.per_address.entry(ip).or_default();
        if self.per_address_cap > 0 && *n >= self.per_address_cap {
            if *n == 0 {
                self.per_address.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub fn close(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// A connection starts waiting for its hello: its id, and the id of the
    /// oldest waiting one to close if the budget is full.
    pub fn hello_started(&mut self) -> (u64, Option<u64>) {
        let id = self.next;
        self.next += 1;
        let evicted = if self.waiting.len() >= self.hello_less_cap { self.waiting.pop_front() } else { None };
        self.waiting.push_back(id);
        (id, evicted)
    }

    /// The connection said hello, or ended.
    pub fn hello_ended(&mut self, id: u64) {
        if let Some(i) = self.waiting.iter().position(|w| *w == id) {
            self.waiting.remove(i);
        }
    }

    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_address.get(&ip).copied().unwrap_or(0)
    }
}

/// [`ConnBook`] shared by the gateway's connection tasks.
pub struct Doors {
    inner: Mutex<(ConnBook, HashMap<u64, Arc<Notify>>)>,
}

/// A connection's place under its address's cap; given back on drop.
pub struct AddressSlot {
    doors: Arc<Doors>,
    ip: IpAddr,
}

/// A place among the hello-less connections; given back on drop.
/// `evicted` fires when a newer connection took the place.
pub struct HelloSlot {
    doors: Arc<Doors>,
    id: u64,
    pub evicted: Arc<Notify>,
}

impl Doors {
    pub fn new(per_address_cap: usize, hello_less_cap: usize) -> Arc<Doors> {
        Arc::new(Doors { inner: Mutex::new((ConnBook::new(per_address_cap, hello_less_cap), HashMap::new())) })
    }

    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut g = self.inner.lock().expect("doors lock");
        g.0.open(ip).then(|| AddressSlot { doors: self.clone(), ip })
    }

    pub fn wait_for_hello(self: &Arc<Self>) -> HelloSlot {
        let mut g = self.inner.lock().expect("doors lock");
        let (id, evicted) = g.0.hello_started();
        if let Some(old) = evicted.and_then(|e| g.1.remove(&e)) {
            old.notify_one();
        }
        let notify = Arc::new(Notify::new());
        g.1.insert(id, notify.clone());
        HelloSlot { doors: self.clone(), id, evicted: notify }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        self.doors.inner.lock().expect("doors lock").0.close(self.ip);
    }
}

impl Drop for HelloSlot {
    fn drop(&mut self) {
        let mut g = self.doors.inner.lock().expect("doors lock");
        g.0.hello_ended(self.id);
        g.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_cap_and_a_closed_connection_frees_its_place() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut book = ConnBook::new(2, 8);
        assert!(book.open(a) && book.open(a));
        assert!(!book.open(a), "a third from one address");
        assert!(book.open(b), "another address");
        book.close(a);
        assert!(book.open(a), "a place was given back");
        assert_eq!(book.connections_from(a), 2);
        let mut one = ConnBook::new(1, 8);
        assert!(one.open(a) && !one.open(a));
        assert_eq!(one.connections_from(a), 1, "a refusal counts nothing");
        let mut open = ConnBook::new(0, 8);
        assert!((0..1000).all(|_| open.open(a)), "0: no cap");
    }

    #[test]
    fn the_oldest_hello_less_connection_makes_room() {
        let mut book = ConnBook::new(8, 2);
        let (first, none) = book.hello_started();
        assert_eq!(none, None);
        let (second, _) = book.hello_started();
        let (_, evicted) = book.hello_started();
        assert_eq!(evicted, Some(first));
        book.hello_ended(second);
        let (_, evicted) = book.hello_started();
        assert_eq!(evicted, None, "one that said hello frees its place");
    }

    #[tokio::test]
    async fn slots_give_their_place_back_and_the_evicted_one_is_told() {
        let doors = Doors::new(1, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let slot = doors.open(ip).unwrap();
        assert!(doors.open(ip).is_none());
        drop(slot);
        assert!(doors.open(ip).is_some());
        let old = doors.wait_for_hello();
        let _new = doors.wait_for_hello();
        tokio::time::timeout(std::time::Duration::from_secs(1), old.evicted.notified()).await.expect("the oldest is told to go");
    }
}
