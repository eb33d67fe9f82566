//! List prices of the models the proxy meters, in dollars per million tokens (so a token costs that many
//! millionths of a dollar). A model outside this table is refused (400 `unknown_model`): a call we cannot
//! price is a call we cannot budget. Dated versions (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`)
//! take the price of the longest listed name they extend.

use super::LlmProvider;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    pub provider: LlmProvider,
    pub model: &'static str,
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

const fn p(
    provider: LlmProvider,
    model: &'static str,
    input: f64,
    output: f64,
    cache_read: f64,
    cache_write: f64,
) -> ModelPrice {
    ModelPrice { provider, model, input, output, cache_read, cache_write }
}

use LlmProvider::{Anthropic as A, OpenAi as O};

/// Anthropic's cache writes are the 5-minute kind (1.25x input); OpenAI bills no cache writes.
pub const PRICES: &[ModelPrice] = &[
    p(A, "claude-opus-4-5", 5.0, 25.0, 0.5, 6.25),
    p(A, "claude-opus-4-1", 15.0, 75.0, 1.5, 18.75),
    p(A, "claude-opus-4", 15.0, 75.0, 1.5, 18.75),
    p(A, "claude-sonnet-4-5", 3.0, 15.0, 0.3, 3.75),
    p(A, "claude-sonnet-4", 3.0, 15.0, 0.3, 3.75),
    p(A, "claude-haiku-4-5", 1.0, 5.0, 0.1, 1.25),
    p(A, "claude-3-5-haiku", 0.8, 4.0, 0.08, 1.0),
    p(O, "gpt-5", 1.25, 10.0, 0.125, 0.0),
    p(O, "gpt-5-mini", 0.25, 2.0, 0.025, 0.0),
    p(O, "gpt-5-nano", 0.05, 0.4, 0.005, 0.0),
    p(O, "gpt-4.1", 2.0, 8.0, 0.5, 0.0),
    p(O, "gpt-4.1-mini", 0.4, 1.6, 0.1, 0.0),
    p(O, "gpt-4.1-nano", 0.1, 0.4, 0.025, 0.0),
    p(O, "gpt-4o", 2.5, 10.0, 1.25, 0.0),
    p(O, "gpt-4o-mini", 0.15, 0.6, 0.075, 0.0),
    p(O, "o4-mini", 1.1, 4.4, 0.275, 0.0),
];

/// The price of `model` on `provider`'s API.
pub fn price(provider: LlmProvider, model: &str) -> Option<&'static ModelPrice> {
    price_any(model).filter(|p| p.provider == provider)
}

/// The price of `model`, whichever API serves it.
pub fn price_any(model: &str) -> Option<&'static ModelPrice> {
    PRICES
        .iter()
        .filter(|p| model == p.model || model.strip_prefix(p.model).is_some_and(|rest| rest.starts_with('-')))
        .max_by_key(|p| p.model.len())
}

/// The models of one API, for error messages and the settings page.
pub fn models(provider: LlmProvider) -> Vec<&'static str> {
    PRICES.iter().filter(|p| p.provider == provider).map(|p| p.model).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dated_model_takes_the_price_of_the_longest_name_it_extends() {
        assert_eq!(price_any("gpt-4o-mini-2024-07-18").map(|p| p.model), Some("gpt-4o-mini"));
        assert_eq!(price_any("gpt-4o-2024-08-06").map(|p| p.model), Some("gpt-4o"));
        assert_eq!(price_any("claude-sonnet-4-5-20250929").map(|p| p.model), Some("claude-sonnet-4-5"));
        assert_eq!(price_any("claude-sonnet-4-20250514").map(|p| p.model), Some("claude-sonnet-4"));
        assert_eq!(price_any("gpt-4oo"), None);
        assert_eq!(price(LlmProvider::OpenAi, "claude-haiku-4-5"), None);
    }
}
