// Keeps agentwire_consumers a valid library until its first real source lands.
namespace agentwire::consumers {}
