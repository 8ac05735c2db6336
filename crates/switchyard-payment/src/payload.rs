//! Payloads of the payment operations. Their JSON Schemas are generated from these types and
//! committed under `schemas/payment/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `charge`: take a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    /// Amount in the currency's minor unit (cents for USD).
    #[schemars(range(min = 1))]
    pub amount: u64,
    /// ISO 4217 code, lowercase (`usd`, `eur`).
    #[schemars(pattern(r"^[a-z]{3}$"))]
    pub currency: String,
    /// A tokenised payment method from the provider's client SDK (never a raw card number).
    #[schemars(length(min = 1, max = 255))]
    pub payment_method: String,
    /// The provider's customer id, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub customer: Option<String>,
    /// Shown on receipts and in the provider's dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub description: Option<String>,
}

/// Why a refund is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// Charged twice.
    Duplicate,
    /// Not authorised by the card holder.
    Fraudulent,
    /// The customer asked.
    RequestedByCustomer,
}

/// `refund`: give back all or part of a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    /// The provider's reference of the charge (from its `completed` event).
    #[schemars(length(min = 1, max = 255))]
    pub payment_reference: String,
    /// Minor units to refund; the whole charge when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub amount: Option<u64>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RefundReason>,
}
