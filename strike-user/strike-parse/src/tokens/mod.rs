//! Token numbers of a request, and where they came from.
//!
//! Priority: the server's `usage` (Ollama: `prompt_eval_count`/`eval_count`); else
//! llama.cpp's `timings`; else Strike's estimates: output = content-bearing stream deltas
//! summed over choices (servers such as vLLM and llama.cpp send one token per delta), or
//! for a non-streaming response its text bytes / 4; input = prompt text bytes / 4 plus
//! prompt token ids. Embeddings produce no output tokens.

use crate::record::{Api, CountSource, TokenSource};

/// Token counts reported by the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    /// Output tokens spent reasoning (`completion_tokens_details.reasoning_tokens`),
    /// included in `completion_tokens`.
    pub reasoning_tokens: Option<u64>,
    /// Input tokens written to the prompt cache (Anthropic `cache_creation_input_tokens`),
    /// included in `prompt_tokens`.
    pub cache_write_tokens: Option<u64>,
}

impl Usage {
    /// Each count of `newer` where it has one, else this one's.
    #[must_use]
    pub fn merged(self, newer: Self) -> Self {
        Self {
            prompt_tokens: newer.prompt_tokens.or(self.prompt_tokens),
            completion_tokens: newer.completion_tokens.or(self.completion_tokens),
            cached_tokens: newer.cached_tokens.or(self.cached_tokens),
            reasoning_tokens: newer.reasoning_tokens.or(self.reasoning_tokens),
            cache_write_tokens: newer.cache_write_tokens.or(self.cache_write_tokens),
        }
    }
}

/// llama.cpp's `timings` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Prompt tokens evaluated (not taken from the cache).
    pub prompt_n: Option<u64>,
    pub predicted_n: Option<u64>,
    /// Prompt tokens taken from the cache.
    pub cache_n: Option<u64>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenInputs {
    pub api: Option<Api>,
    pub usage: Option<Usage>,
    pub timings: Option<Timings>,
    /// The response was streamed and its events were seen.
    pub streamed: bool,
    /// Content-bearing deltas summed over choices.
    pub stream_content_count: u64,
    /// Generated text bytes (non-streaming body).
    pub text_bytes: u64,
    /// A response body was parsed (so a zero count means zero, not unknown).
    pub response_seen: bool,
    /// The request body was parsed.
    pub request_seen: bool,
    pub prompt_bytes: u64,
    pub prompt_token_ids: u64,
}

/// The decided numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cached: Option<u64>,
    /// Of the output, tokens spent reasoning (the server's count only).
    pub reasoning: Option<u64>,
    /// Of the input, tokens written to the prompt cache (the server's count only).
    pub cache_write: Option<u64>,
    pub source: TokenSource,
    pub input_source: Option<CountSource>,
    pub output_source: Option<CountSource>,
}

/// Bytes / 4, rounded up: a rough tokens-from-text estimate.
pub fn estimate_from_bytes(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// Decides the token numbers of one request.
pub fn decide(i: &TokenInputs) -> TokenCounts {
    let mut input = None;
    let mut output = None;
    let mut cached = None;
    let mut input_source = None;
    let mut output_source = None;
    let embeddings = i.api.is_some_and(Api::generates_nothing);

    if let Some(u) = i.usage {
        if let Some(p) = u.prompt_tokens {
            input = Some(p);
            input_source = Some(CountSource::Usage);
        }
        if let Some(c) = u.completion_tokens {
            output = Some(c);
            output_source = Some(CountSource::Usage);
        }
        cached = u.cached_tokens;
    }
    if let Some(t) = i.timings {
        if input.is_none() {
            if let Some(p) = t.prompt_n {
                // prompt_n counts only the prompt tokens evaluated; cache_n the reused ones.
                input = Some(p.saturating_add(t.cache_n.unwrap_or(0)));
                input_source = Some(CountSource::Timings);
            }
        }
        if output.is_none() {
            if let Some(n) = t.predicted_n {
                output = Some(n);
                output_source = Some(CountSource::Timings);
            }
        }
        if cached.is_none() {
            cached = t.cache_n;
        }
    }
    if embeddings {
        output = Some(0);
        output_source = Some(CountSource::Api);
    }
    if input.is_none() && i.request_seen && (i.prompt_bytes > 0 || i.prompt_token_ids > 0) {
        input = Some(estimate_from_bytes(i.prompt_bytes).saturating_add(i.prompt_token_ids));
        input_source = Some(CountSource::PromptBytes);
    }
    if output.is_none() && i.response_seen {
        if i.streamed {
            output = Some(i.stream_content_count);
            output_source = Some(CountSource::StreamCount);
        } else {
            output = Some(estimate_from_bytes(i.text_bytes));
            output_source = Some(CountSource::TextBytes);
        }
    }

    let sources = [input_source, output_source];
    let source = if sources.contains(&Some(CountSource::Usage)) {
        TokenSource::Usage
    } else if sources.contains(&Some(CountSource::Timings)) {
        TokenSource::Timings
    } else if sources.iter().any(|s| {
        matches!(
            s,
            Some(CountSource::StreamCount | CountSource::PromptBytes | CountSource::TextBytes)
        )
    }) {
        TokenSource::Estimated
    } else {
        TokenSource::None
    };
    let any_measured = sources
        .iter()
        .any(|s| s.is_some() && *s != Some(CountSource::Api));
    TokenCounts {
        input,
        output,
        cached,
        reasoning: i.usage.and_then(|u| u.reasoning_tokens),
        cache_write: i.usage.and_then(|u| u.cache_write_tokens),
        source: if any_measured {
            source
        } else {
            TokenSource::None
        },
        input_source,
        output_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_wins() {
        let c = decide(&TokenInputs {
            api: Some(Api::ChatCompletions),
            usage: Some(Usage {
                prompt_tokens: Some(10),
                completion_tokens: Some(20),
                cached_tokens: Some(4),
                ..Usage::default()
            }),
            timings: Some(Timings {
                prompt_n: Some(1),
                predicted_n: Some(2),
                cache_n: Some(3),
            }),
            streamed: true,
            stream_content_count: 19,
            response_seen: true,
            ..TokenInputs::default()
        });
        assert_eq!(
            (c.input, c.output, c.cached, c.source),
            (Some(10), Some(20), Some(4), TokenSource::Usage)
        );
    }

    #[test]
    fn timings_then_estimates() {
        let c = decide(&TokenInputs {
            timings: Some(Timings {
                prompt_n: Some(5),
                predicted_n: Some(9),
                cache_n: Some(3),
            }),
            ..TokenInputs::default()
        });
        assert_eq!(
            (c.input, c.output, c.cached, c.source),
            (Some(8), Some(9), Some(3), TokenSource::Timings)
        );
        let c = decide(&TokenInputs {
            streamed: true,
            stream_content_count: 7,
            response_seen: true,
            request_seen: true,
            prompt_bytes: 9,
            ..TokenInputs::default()
        });
        assert_eq!(
            (c.input, c.output, c.source, c.output_source),
            (
                Some(3),
                Some(7),
                TokenSource::Estimated,
                Some(CountSource::StreamCount)
            )
        );
        let c = decide(&TokenInputs::default());
        assert_eq!(
            (c.input, c.output, c.source),
            (None, None, TokenSource::None)
        );
    }

    #[test]
    fn embeddings_have_no_output() {
        let c = decide(&TokenInputs {
            api: Some(Api::Embeddings),
            usage: Some(Usage {
                prompt_tokens: Some(6),
                completion_tokens: None,
                cached_tokens: None,
                ..Usage::default()
            }),
            ..TokenInputs::default()
        });
        assert_eq!(
            (c.input, c.output, c.source),
            (Some(6), Some(0), TokenSource::Usage)
        );
    }
}
