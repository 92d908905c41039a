// tests/embedder puts this directory first on the include path: an agent worker that embeds
// the publisher must compile without librdkafka's headers. Reaching this file means a public
// header of agentwire includes librdkafka: make it take kafka::Properties instead.
#error "agentwire's public headers must not include librdkafka/rdkafka.h (see tests/embedder)"
