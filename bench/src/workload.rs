//! The mixed workload: which request a client sends next, and the request bodies. Each client keeps the
//! orders it placed and has not finished with, so that every pay / ship / cancel it sends is one the
//! business rules accept (a refused command would measure the error path, not the service).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::str::FromStr;

/// The request kinds of the mix. The first four are commands (write model), the last two queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Place,
    Pay,
    Ship,
    Cancel,
    Get,
    Search,
}

impl Op {
    pub const ALL: [Op; 6] = [Op::Place, Op::Pay, Op::Ship, Op::Cancel, Op::Get, Op::Search];

    pub fn name(self) -> &'static str {
        match self {
            Op::Place => "place",
            Op::Pay => "pay",
            Op::Ship => "ship",
            Op::Cancel => "cancel",
            Op::Get => "get",
            Op::Search => "search",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_command(self) -> bool {
        matches!(self, Op::Place | Op::Pay | Op::Ship | Op::Cancel)
    }

    /// The status a request of this kind answers when it did what the bench meant.
    pub fn expected_status(self) -> u16 {
        if self == Op::Place { 201 } else { 200 }
    }
}

/// Relative weights of the request kinds, `place=30,pay=25,…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 6],
}

impl Mix {
    pub fn place_only() -> Self {
        Self { weights: [1, 0, 0, 0, 0, 0] }
    }

    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    fn total(&self) -> u32 {
        self.weights.iter().sum()
    }

    /// A kind drawn with the mix's weights.
    pub fn draw(&self, rng: &mut Rng) -> Op {
        let mut n = rng.below(u64::from(self.total())) as u32;
        for op in Op::ALL {
            let w = self.weight(op);
            if n < w {
                return op;
            }
            n -= w;
        }
        Op::Place
    }
}

impl Default for Mix {
    fn default() -> Self {
        DEFAULT_MIX.parse().unwrap_or_else(|_| Self::place_only())
    }
}

pub const DEFAULT_MIX: &str = "place=30,pay=25,ship=15,cancel=5,get=20,search=5";

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = [0u32; 6];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| format!("unknown request kind `{name}` (place, pay, ship, cancel, get, search)"))?;
            weights[op.index()] = weight.trim().parse().map_err(|_| format!("`{weight}` is not a whole number"))?;
        }
        if weights[Op::Place.index()] == 0 {
            return Err("the mix needs place > 0: every other command works on placed orders".into());
        }
        Ok(Self { weights })
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Op::ALL.iter().map(|op| format!("{}={}", op.name(), self.weight(*op))).collect();
        f.write_str(&parts.join(","))
    }
}

/// splitmix64: small, fast, `Send`, and reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Product catalogue the orders draw their lines from: the search queries look for these words.
const PRODUCTS: [(&str, &str); 16] = [
    ("MUG-01", "Blue ceramic mug"),
    ("MUG-02", "Red enamel mug"),
    ("TEA-01", "Green tea loose leaf"),
    ("TEA-02", "Black tea breakfast blend"),
    ("COF-01", "Espresso beans dark roast"),
    ("COF-02", "Filter coffee medium roast"),
    ("KET-01", "Stainless steel kettle"),
    ("PRS-01", "French press glass"),
    ("GRN-01", "Burr coffee grinder"),
    ("SPN-01", "Wooden stirring spoon"),
    ("CUP-01", "Paper cups pack"),
    ("FLT-01", "Paper filters"),
    ("SUG-01", "Cane sugar cubes"),
    ("HNY-01", "Wildflower honey jar"),
    ("BIS-01", "Almond biscuits"),
    ("TRY-01", "Bamboo serving tray"),
];

/// Words that `GET /orders?q=` looks for (prefixes of words of the catalogue).
const QUERIES: [&str; 12] =
    ["mug", "tea", "coffee", "roast", "kettle", "press", "paper", "honey", "bisc", "blue", "green", "bamboo"];

const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// An order a client placed and may still pay, ship or cancel.
#[derive(Debug, Clone)]
pub struct OrderRef {
    pub id: String,
    pub total: u64,
    pub version: u64,
}

/// How many open orders a client remembers per state; older ones are simply left as they are.
const KEEP: usize = 64;

/// How many customers the workload's clients act for (`cust-0` … `cust-999`).
pub const CUSTOMERS: usize = 1000;

/// The customer number client `client` acts for.
pub fn customer_of(client: usize) -> usize {
    client % CUSTOMERS
}

/// One client's view of its own orders.
#[derive(Debug)]
pub struct ClientState {
    pub rng: Rng,
    prefix: String,
    customer: String,
    seq: u64,
    placed: VecDeque<OrderRef>,
    paid: VecDeque<OrderRef>,
    /// Recently touched orders, for `GET /orders/{id}`.
    recent: VecDeque<String>,
}

/// A request ready to send, and what it is about.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Op,
    /// Path and query, from the root (`/orders/x/ship`).
    pub path: String,
    /// JSON body (commands only).
    pub body: Option<String>,
    /// The order the command works on (taken out of the client's state until the answer is known).
    pub order: Option<OrderRef>,
}

impl ClientState {
    /// `run` keeps order ids of different bench runs against one service apart.
    pub fn new(run: &str, client: usize, seed: u64) -> Self {
        Self {
            rng: Rng::new(seed ^ (client as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            prefix: format!("b{run}-{client}"),
            customer: format!("cust-{}", customer_of(client)),
            seq: 0,
            placed: VecDeque::with_capacity(KEEP),
            paid: VecDeque::with_capacity(KEEP),
            recent: VecDeque::with_capacity(KEEP),
        }
    }

    /// The next request: a draw from the mix, or a place when the drawn kind has no order to work on.
    pub fn next_request(&mut self, mix: &Mix) -> Request {
        let op = mix.draw(&mut self.rng);
        match op {
            Op::Pay => match self.placed.pop_front() {
                Some(order) => self.pay(order),
                None => self.place(),
            },
            Op::Ship => match self.paid.pop_front() {
                Some(order) => self.ship(order),
                None => self.place(),
            },
            Op::Cancel => {
                let from_paid = self.rng.chance(0.5);
                let order = if from_paid { self.paid.pop_front() } else { self.placed.pop_front() };
                let order = order.or_else(|| self.placed.pop_front()).or_else(|| self.paid.pop_front());
                match order {
                    Some(order) => self.cancel(order),
                    None => self.place(),
                }
            }
            Op::Get => match self.recent.len() {
                0 => self.place(),
                n => {
                    let id = self.recent[self.rng.below(n as u64) as usize].clone();
                    Request { op, path: format!("/orders/{id}"), body: None, order: None }
                }
            },
            Op::Search => {
                let q = QUERIES[self.rng.below(QUERIES.len() as u64) as usize];
                Request { op, path: format!("/orders?q={q}&limit=20"), body: None, order: None }
            }
            Op::Place => self.place(),
        }
    }

    fn place(&mut self) -> Request {
        self.seq += 1;
        let id = format!("{}-{}", self.prefix, self.seq);
        let currency = CURRENCIES[self.rng.below(CURRENCIES.len() as u64) as usize];
        let lines = 1 + self.rng.below(3);
        let mut body =
            format!(r#"{{"orderId":"{id}","customerId":"{}","currency":"{currency}","items":["#, self.customer);
        let mut total = 0u64;
        for i in 0..lines {
            let (sku, name) = PRODUCTS[self.rng.below(PRODUCTS.len() as u64) as usize];
            let quantity = 1 + self.rng.below(5);
            let price = 100 + self.rng.below(9_900);
            total += quantity * price;
            if i > 0 {
                body.push(',');
            }
            let _ = write!(body, r#"{{"sku":"{sku}","name":"{name}","quantity":{quantity},"unitPrice":{price}}}"#);
        }
        body.push_str("]}");
        Request {
            op: Op::Place,
            path: "/orders".into(),
            body: Some(body),
            order: Some(OrderRef { id, total, version: 0 }),
        }
    }

    fn pay(&mut self, order: OrderRef) -> Request {
        let body = format!(r#"{{"paymentId":"pay-{}","amount":{}}}"#, order.id, order.total);
        Request {
            op: Op::Pay,
            path: format!("/orders/{}/confirm-payment", order.id),
            body: Some(body),
            order: Some(order),
        }
    }

    fn ship(&mut self, order: OrderRef) -> Request {
        let body = format!(r#"{{"carrier":"DHL","trackingNumber":"JD{:010}"}}"#, self.rng.below(10_000_000_000));
        Request { op: Op::Ship, path: format!("/orders/{}/ship", order.id), body: Some(body), order: Some(order) }
    }

    fn cancel(&mut self, order: OrderRef) -> Request {
        let body = r#"{"reason":"changed my mind"}"#.to_owned();
        Request { op: Op::Cancel, path: format!("/orders/{}/cancel", order.id), body: Some(body), order: Some(order) }
    }

    /// Moves the order on after the service's answer. `status` is `None` for a transport error; a 503 had no
    /// effect (API.md), so the order goes back where it was.
    pub fn settle(&mut self, request: Request, status: Option<u16>, version: Option<u64>) {
        let Some(mut order) = request.order else { return };
        let ok = status == Some(request.op.expected_status());
        if let Some(v) = version.filter(|_| ok) {
            order.version = v;
        }
        match (request.op, ok) {
            (Op::Place, true) => {
                remember(&mut self.recent, order.id.clone());
                remember(&mut self.placed, order);
            }
            (Op::Pay, true) => {
                remember(&mut self.recent, order.id.clone());
                remember(&mut self.paid, order);
            }
            (Op::Ship | Op::Cancel, true) => remember(&mut self.recent, order.id),
            // 503 had no effect: the order is where it was (version 1 placed, 2 paid); try again later.
            (_, false) if status == Some(503) => match order.version {
                1 => remember(&mut self.placed, order),
                2 => remember(&mut self.paid, order),
                _ => {}
            },
            // Anything else: the bench's idea of the order is unreliable, forget it.
            _ => {}
        }
    }
}

fn remember<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == KEEP {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_refuses_nonsense() {
        let mix: Mix = "place=1,get=3".parse().unwrap();
        assert_eq!(mix.weight(Op::Get), 3);
        assert_eq!(mix.weight(Op::Pay), 0);
        assert!("pay=1".parse::<Mix>().is_err());
        assert!("place=x".parse::<Mix>().is_err());
        assert!("fly=1,place=1".parse::<Mix>().is_err());
        assert_eq!(Mix::default().to_string(), DEFAULT_MIX);
    }

    #[test]
    fn draws_follow_the_weights() {
        let mix: Mix = "place=1,get=3".parse().unwrap();
        let mut rng = Rng::new(7);
        let gets = (0..10_000).filter(|_| mix.draw(&mut rng) == Op::Get).count();
        assert!((7_000..8_000).contains(&gets), "{gets}");
    }

    #[test]
    fn a_client_only_pays_what_it_placed() {
        let mut client = ClientState::new("t", 0, 1);
        let mix: Mix = "place=1,pay=1,ship=1,cancel=1".parse().unwrap();
        for _ in 0..200 {
            let request = client.next_request(&mix);
            if request.op == Op::Place {
                let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
                let total: u64 = body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["quantity"].as_u64().unwrap() * l["unitPrice"].as_u64().unwrap())
                    .sum();
                assert_eq!(total, request.order.as_ref().unwrap().total);
            }
            if request.op == Op::Pay {
                assert_eq!(request.order.as_ref().unwrap().version, 1);
            }
            let version = request.order.as_ref().map(|o| o.version + 1);
            let status = request.op.expected_status();
            client.settle(request, Some(status), version);
        }
    }
}
