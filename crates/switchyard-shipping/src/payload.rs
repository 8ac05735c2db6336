//! Payloads of the shipping operations; schemas committed under `schemas/shipping/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A postal address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Person or company.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// First street line.
    #[schemars(length(min = 1, max = 255))]
    pub street1: String,
    /// Second street line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street2: Option<String>,
    /// City.
    #[schemars(length(min = 1, max = 255))]
    pub city: String,
    /// State or province code, where the country has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Postal code.
    #[schemars(length(min = 1, max = 32))]
    pub zip: String,
    /// ISO 3166-1 alpha-2 country code.
    #[schemars(pattern(r"^[A-Z]{2}$"))]
    pub country: String,
    /// Phone, for the carrier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The parcel's weight and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parcel {
    /// Weight in grams.
    #[schemars(range(min = 1))]
    pub weight_grams: u32,
    /// Length in centimetres.
    #[schemars(range(min = 1))]
    pub length_cm: u32,
    /// Width in centimetres.
    #[schemars(range(min = 1))]
    pub width_cm: u32,
    /// Height in centimetres.
    #[schemars(range(min = 1))]
    pub height_cm: u32,
}

/// How to choose among the carriers' rates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateRule {
    /// The lowest price.
    Cheapest,
    /// The fewest delivery days.
    Fastest,
    /// A named carrier and service.
    Service {
        /// Carrier, e.g. `USPS`.
        carrier: String,
        /// Service, e.g. `Priority`.
        service: String,
    },
}

/// `create_label`: create a shipment and buy its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLabel {
    /// Sender.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// What is shipped.
    pub parcel: Parcel,
    /// Which rate to buy.
    pub rate: RateRule,
    /// Your reference, printed on the label where the carrier supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// `track`: follow a shipment until it is delivered or fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// The carrier's tracking code.
    #[schemars(length(min = 1, max = 255))]
    pub tracking_code: String,
    /// The carrier, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
}
