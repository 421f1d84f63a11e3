//! One `RequestRecord` → points on the `GenAI` server histograms and Strike's own instruments.

use opentelemetry::{
    metrics::{Counter, Histogram, Meter},
    KeyValue,
};

use super::{
    semconv as sc,
    spans::{count_source_name, operation_name, SpanOptions},
};
use crate::record::{Api, RequestRecord};

/// The instruments Strike records into, built once per meter.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    request_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    token_usage: Histogram<u64>,
    requests: Counter<u64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            request_duration: meter
                .f64_histogram(sc::METRIC_SERVER_REQUEST_DURATION)
                .with_unit("s")
                .with_description(
                    "Generative AI server request duration such as time-to-last byte or last output token.",
                )
                .with_boundaries(sc::REQUEST_DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_token: meter
                .f64_histogram(sc::METRIC_SERVER_TIME_TO_FIRST_TOKEN)
                .with_unit("s")
                .with_description("Time to generate first token for successful responses.")
                .with_boundaries(sc::TIME_TO_FIRST_TOKEN_BUCKETS.to_vec())
                .build(),
            time_per_output_token: meter
                .f64_histogram(sc::METRIC_SERVER_TIME_PER_OUTPUT_TOKEN)
                .with_unit("s")
                .with_description(
                    "Time per output token generated after the first token for successful responses.",
                )
                .with_boundaries(sc::TIME_PER_OUTPUT_TOKEN_BUCKETS.to_vec())
                .build(),
            token_usage: meter
                .u64_histogram(sc::METRIC_STRIKE_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Input and output tokens per request, as Strike saw them.")
                .with_boundaries(sc::TOKEN_USAGE_BUCKETS.to_vec())
                .build(),
            requests: meter
                .u64_counter(sc::METRIC_STRIKE_REQUESTS)
                .with_unit("{request}")
                .with_description("`GenAI` requests seen by Strike.")
                .build(),
        }
    }

    /// Records one request. Requests that are not `GenAI` operations are not recorded.
    /// Returns whether the record was recorded.
    pub(crate) fn record(&self, record: &RequestRecord, options: &SpanOptions) -> bool {
        let Some(operation) = operation_name(record.api) else {
            return false;
        };
        let mut attrs = Vec::with_capacity(8);
        attrs.push(KeyValue::new(sc::GEN_AI_OPERATION_NAME, operation));
        attrs.push(KeyValue::new(
            sc::GEN_AI_PROVIDER_NAME,
            options.provider_name.clone(),
        ));
        if let Some(model) = &record.request_model {
            attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()));
        }
        if let Some(model) = &record.model {
            attrs.push(KeyValue::new(sc::GEN_AI_RESPONSE_MODEL, model.clone()));
        }
        if let Some(address) = &record.server_address {
            attrs.push(KeyValue::new(sc::SERVER_ADDRESS, address.clone()));
        }
        if let Some(port) = record.server_port {
            attrs.push(KeyValue::new(sc::SERVER_PORT, i64::from(port)));
        }
        let ok = record.error.is_none();

        // Successful-request attributes: the latency histograms are "for successful
        // responses" and carry no error.type.
        if ok {
            if let Some(ttft) = record.ttft_ms {
                self.time_to_first_token.record(ttft / 1000.0, &attrs);
            }
            if let Some(tpot) = record.tpot_ms {
                self.time_per_output_token.record(tpot / 1000.0, &attrs);
            }
        }
        let base_len = attrs.len();
        let token_attrs = |token_type: &'static str, source| {
            let mut a = attrs[..base_len].to_vec();
            a.push(KeyValue::new(sc::GEN_AI_TOKEN_TYPE, token_type));
            if let Some(source) = source {
                a.push(KeyValue::new(
                    sc::STRIKE_TOKEN_COUNT_SOURCE,
                    count_source_name(source),
                ));
            }
            a
        };
        if let Some(input) = record.input_tokens {
            self.token_usage.record(
                input,
                &token_attrs(sc::token_type::INPUT, record.input_token_source),
            );
        }
        if record.api != Api::Embeddings {
            if let Some(output) = record.output_tokens {
                self.token_usage.record(
                    output,
                    &token_attrs(sc::token_type::OUTPUT, record.output_token_source),
                );
            }
        }

        if let Some(error) = &record.error {
            attrs.push(KeyValue::new(sc::ERROR_TYPE, error.clone()));
        }
        if let Some(e2e) = record.e2e_ms {
            self.request_duration.record(e2e / 1000.0, &attrs);
        }
        if let Some(status) = record.status {
            attrs.push(KeyValue::new(
                sc::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        self.requests.add(1, &attrs);
        true
    }
}
