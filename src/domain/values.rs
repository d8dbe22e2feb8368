//! Validated value types. Parse, don't validate: once a value has one of these types it obeys docs/api.md §1,
//! so nothing downstream re-checks it. Constructors report a [`FieldError`] naming the JSON field.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One rule broken by one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// All the rules a request broke, so a client can fix them in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Keeps the value if it parsed, records the error otherwise.
    pub fn collect<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// A required field: parsed if present, "is required" if not.
    pub fn require<R, T>(
        &mut self,
        field: &str,
        value: Option<R>,
        parse: impl FnOnce(&str, R) -> Result<T, FieldError>,
    ) -> Option<T> {
        match value {
            Some(value) => self.collect(parse(field, value)),
            None => {
                self.push(FieldError::new(field, "is required"));
                None
            }
        }
    }

    /// The value when no rule was broken, otherwise every broken rule.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, ValidationErrors> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => Err(self),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_id(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() || value.len() > 64 || !value.chars().all(is_id_char) {
        return Err(FieldError::new(field, "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'"));
    }
    Ok(value.to_owned())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
                parse_id(field, value).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// An order's id: 1–64 characters of `[A-Za-z0-9_-]`, client-supplied or a server-made UUIDv7.
    OrderId
);
id_type!(
    /// A customer's id: 1–64 characters of `[A-Za-z0-9_-]`. For a customer token it is the token's `sub`.
    CustomerId
);

impl OrderId {
    /// A fresh, time-ordered id (UUIDv7), used when the client does not supply one.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// An ISO-4217 currency code: three uppercase ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        match value.as_bytes() {
            [a, b, c] if value.bytes().all(|b| b.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(FieldError::new(field, "must be an ISO-4217 code of 3 uppercase letters")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from three ASCII uppercase letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse("currency", &s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Free text with a length bound in characters (not bytes): item names, carriers, reasons, payment ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &str, value: &str, max_chars: usize) -> Result<Self, FieldError> {
        let n = value.chars().count();
        if n == 0 || n > max_chars {
            return Err(FieldError::new(field, format!("must be 1-{max_chars} characters")));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stock keeping unit: 1–64 characters.
pub type Sku = Text;

/// Bounds of the free-text fields, in characters.
pub mod limits {
    pub const SKU: usize = 64;
    pub const ITEM_NAME: usize = 200;
    pub const PAYMENT_ID: usize = 128;
    pub const CARRIER: usize = 100;
    pub const TRACKING_NUMBER: usize = 100;
    pub const CANCEL_REASON: usize = 500;
    pub const MAX_ITEMS: usize = 100;
    pub const MAX_QUANTITY: i128 = 10_000;
    pub const MAX_UNIT_PRICE: i128 = 10_000_000_000;
    pub const ADDRESS_NAME: usize = 200;
    pub const ADDRESS_LINE: usize = 200;
    pub const POSTAL_CODE: usize = 20;
    pub const CITY: usize = 100;
    /// The largest possible order total (100 lines × 10⁴ × 10¹⁰ minor units), so also the largest payment.
    pub const MAX_AMOUNT: i128 = MAX_ITEMS as i128 * MAX_QUANTITY * MAX_UNIT_PRICE;
}

/// A line quantity: 1–10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(field: &str, value: i128) -> Result<Self, FieldError> {
        if !(1..=limits::MAX_QUANTITY).contains(&value) {
            return Err(FieldError::new(field, format!("must be an integer from 1 to {}", limits::MAX_QUANTITY)));
        }
        Ok(Self(value as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// An amount of money in integer minor units (cents for EUR). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    pub const ZERO: Money = Money(0);

    /// A non-negative amount no larger than `max`.
    pub fn parse(field: &str, value: i128, max: i128) -> Result<Self, FieldError> {
        if !(0..=max).contains(&value) {
            return Err(FieldError::new(field, format!("must be an integer from 0 to {max} (minor units)")));
        }
        Ok(Self(value as u64))
    }

    pub fn from_minor(value: u64) -> Self {
        Self(value)
    }

    pub fn minor(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_mul(self, quantity: Quantity) -> Option<Money> {
        self.0.checked_mul(u64::from(quantity.0)).map(Money)
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub sku: Sku,
    pub name: Text,
    pub quantity: Quantity,
    pub unit_price: Money,
}

impl LineItem {
    pub fn line_total(&self) -> Option<Money> {
        self.unit_price.checked_mul(self.quantity)
    }
}

/// An ISO 3166-1 alpha-2 country code: two uppercase ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Country(String);

impl Country {
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new(field, "must be an ISO 3166-1 alpha-2 code of 2 uppercase letters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an order is shipped to (`OrderPlaced` schema version 2). Optional: orders placed without one, and every
/// order placed before version 2, have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddress {
    /// The recipient, 1-200 characters.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub name: Text,
    /// 1-200 characters.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub line1: Text,
    /// 1-200 characters, or left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub line2: Option<Text>,
    /// 1-20 characters.
    #[schema(value_type = String, min_length = 1, max_length = 20)]
    pub postal_code: Text,
    /// 1-100 characters.
    #[schema(value_type = String, min_length = 1, max_length = 100)]
    pub city: Text,
    /// An ISO 3166-1 alpha-2 code.
    #[schema(value_type = String, pattern = "^[A-Z]{2}$", example = "DE")]
    pub country: Country,
}

/// Σ quantity × unitPrice, or `None` on overflow.
pub fn order_total(items: &[LineItem]) -> Option<Money> {
    items.iter().try_fold(Money::ZERO, |sum, item| sum.checked_add(item.line_total()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_allowed_alphabet_only() {
        assert!(OrderId::parse("orderId", "abc-DEF_123").is_ok());
        assert!(OrderId::parse("orderId", &"a".repeat(64)).is_ok());
        assert!(OrderId::parse("orderId", &"a".repeat(65)).is_err());
        assert!(OrderId::parse("orderId", "").is_err());
        assert!(OrderId::parse("orderId", "a b").is_err());
        assert!(CustomerId::parse("customerId", "ünï").is_err());
        assert!(OrderId::parse("orderId", OrderId::generate().as_str()).is_ok());
    }

    #[test]
    fn currency_is_three_uppercase_letters() {
        assert_eq!(Currency::parse("currency", "EUR").map(|c| c.to_string()), Ok("EUR".to_owned()));
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR", ""] {
            assert!(Currency::parse("currency", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_bounds_count_characters_not_bytes() {
        assert!(Text::parse("name", &"é".repeat(200), 200).is_ok());
        assert!(Text::parse("name", &"é".repeat(201), 200).is_err());
        assert!(Text::parse("name", "", 200).is_err());
    }

    #[test]
    fn quantity_and_money_ranges() {
        assert!(Quantity::parse("q", 0).is_err());
        assert!(Quantity::parse("q", 10_000).is_ok());
        assert!(Quantity::parse("q", 10_001).is_err());
        assert!(Money::parse("p", -1, limits::MAX_UNIT_PRICE).is_err());
        assert!(Money::parse("p", 0, limits::MAX_UNIT_PRICE).is_ok());
        assert!(Money::parse("p", 10_000_000_001, limits::MAX_UNIT_PRICE).is_err());
    }

    #[test]
    fn country_is_two_uppercase_letters() {
        assert!(Country::parse("country", "DE").is_ok());
        for bad in ["de", "DEU", "D", "", "D1", "ÄB"] {
            assert!(Country::parse("country", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn total_is_exact_integer_arithmetic() {
        let item = |q, p| LineItem {
            sku: Text::parse("sku", "S", 64).unwrap(),
            name: Text::parse("name", "N", 200).unwrap(),
            quantity: Quantity::parse("q", q).unwrap(),
            unit_price: Money::parse("p", p, limits::MAX_UNIT_PRICE).unwrap(),
        };
        assert_eq!(order_total(&[item(3, 1999), item(1, 1)]), Some(Money::from_minor(5998)));
        // The largest legal order stays far below u64::MAX; overflow is still checked.
        let max = vec![item(10_000, 10_000_000_000); 100];
        assert_eq!(order_total(&max), Some(Money::from_minor(10_000_000_000_000_000)));
        assert_eq!(Money::from_minor(u64::MAX).checked_add(Money::from_minor(1)), None);
    }
}
