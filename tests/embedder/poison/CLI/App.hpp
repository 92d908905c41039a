// See poison/librdkafka/rdkafka.h: an embedder must compile without CLI11's headers too.
#error "agentwire's public headers must not include CLI11 (see tests/embedder)"
