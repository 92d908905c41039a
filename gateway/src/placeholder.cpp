// Keeps agentwire_gateway a valid library until its first real source lands.
namespace agentwire::gateway {}
