# Turns infra/sql/NNNN_name.sql into a C++ source that holds every migration as a string, so the
# agentwire binary (and its container image) needs no SQL files at run time.
# Usage: cmake -DSQL_DIR=... -DOUTPUT=... -P embed_sql.cmake
file(GLOB migrations ${SQL_DIR}/[0-9][0-9][0-9][0-9]_*.sql)
list(SORT migrations)
set(body "")
foreach(path ${migrations})
  get_filename_component(file_name ${path} NAME_WE)
  string(REGEX MATCH "^([0-9]+)_(.+)$" _ ${file_name})
  set(version ${CMAKE_MATCH_1})
  set(name ${CMAKE_MATCH_2})
  string(REGEX REPLACE "^0+([0-9])" "\\1" version ${version})
  file(READ ${path} sql)
  string(FIND "${sql}" ")agentwire_sql\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "${path} contains the raw-string delimiter )agentwire_sql\"")
  endif()
  string(APPEND body "    {${version}, \"${name}\", R\"agentwire_sql(${sql})agentwire_sql\"},\n")
endforeach()
set(content "// Generated from infra/sql/*.sql by consumers/cmake/embed_sql.cmake. Do not edit.
#include \"agentwire/consumers/migrations.hpp\"

namespace agentwire::consumers {

const std::vector<Migration>& EmbeddedMigrations() {
  static const std::vector<Migration> kMigrations = {
${body}  };
  return kMigrations;
}

}  // namespace agentwire::consumers
")
# Only touch the file when it changes, so an unrelated reconfigure rebuilds nothing.
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} previous)
  if(previous STREQUAL content)
    return()
  endif()
endif()
file(WRITE ${OUTPUT} "${content}")
