#include "agentwire/cli/app.hpp"

int main(int argc, char** argv) { return agentwire::cli::RunCli(argc, argv); }
