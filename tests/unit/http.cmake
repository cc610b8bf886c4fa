# HTTP layer tests: unit tests (ctest), the http-test-server used by
# tests/e2e/test_http_layer.py, and the libFuzzer harness (APPBIN_FUZZ=ON).
# Self-contained: include()d from tests/unit/CMakeLists.txt (or any project
# that has the appbin_http target).
if(NOT TARGET appbin_http)
  return()
endif()
set(_http_tests ${CMAKE_CURRENT_LIST_DIR})
set(_http_root ${CMAKE_CURRENT_LIST_DIR}/../..)

foreach(t test_http_response test_http_parser)
  add_executable(${t} ${_http_tests}/${t}.c)
  target_link_libraries(${t} PRIVATE appbin_http)
  add_test(NAME ${t} COMMAND ${t})
endforeach()

add_executable(http-test-server ${_http_tests}/http_test_server.c)
target_link_libraries(http-test-server PRIVATE appbin_http)

if(APPBIN_FUZZ)
  add_executable(fuzz_http_conn ${_http_root}/tests/fuzz/fuzz_http_conn.c)
  target_compile_options(fuzz_http_conn PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_http_conn PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_http_conn PRIVATE appbin_http)
  add_test(NAME fuzz_http_conn_30s
           COMMAND fuzz_http_conn -max_total_time=30 -timeout=10
                   -dict=${_http_root}/tests/fuzz/http.dict
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus ${_http_root}/tests/fuzz/corpus)
  set_tests_properties(fuzz_http_conn_30s PROPERTIES TIMEOUT 120)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus)
endif()
