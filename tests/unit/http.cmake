# HTTP layer tests: unit tests (ctest), the http-test-server used by
# tests/e2e/test_http_layer.py, and the libFuzzer harness (APPBIN_FUZZ=ON).
# Self-contained: include()d from tests/unit/CMakeLists.txt (or any project
# that has the appbin_http target).
if(NOT TARGET appbin_http)
  return()
endif()
set(_http_tests ${CMAKE_CURRENT_LIST_DIR})
set(_http_root ${CMAKE_CURRENT_LIST_DIR}/../..)

foreach(t test_http_response test_http_parser test_http_upgrade)
  add_executable(${t} ${_http_tests}/${t}.c)
  target_link_libraries(${t} PRIVATE appbin_http)
  add_test(NAME ${t} COMMAND ${t})
endforeach()

add_executable(http-test-server ${_http_tests}/http_test_server.c)
target_link_libraries(http-test-server PRIVATE appbin_http)

if(APPBIN_FUZZ)
  # The layer and llhttp rebuilt with coverage for libFuzzer (the regular
  # appbin_http stays uninstrumented).
  get_target_property(_http_srcs appbin_http SOURCES)
  add_library(appbin_http_fuzz STATIC ${_http_srcs} /usr/share/llhttp/llhttp.c
              /usr/share/llhttp/api.c /usr/share/llhttp/http.c)
  target_include_directories(appbin_http_fuzz PUBLIC ${_http_root}/host /usr/share/include/llhttp)
  target_compile_definitions(appbin_http_fuzz PRIVATE LLHTTP_STRICT_MODE=1)
  target_compile_options(appbin_http_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                         -fno-sanitize-recover=undefined -Wno-error)
  set_source_files_properties(/usr/share/llhttp/llhttp.c /usr/share/llhttp/api.c
                              /usr/share/llhttp/http.c TARGET_DIRECTORY appbin_http_fuzz
                              PROPERTIES COMPILE_OPTIONS -w)
  target_link_libraries(appbin_http_fuzz PUBLIC ${LIBUV_STATIC} ${SSL_STATIC} ${CRYPTO_STATIC} pthread
                        dl)
  add_executable(fuzz_http_conn ${_http_root}/tests/fuzz/fuzz_http_conn.c)
  target_compile_options(fuzz_http_conn PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_http_conn PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_http_conn PRIVATE appbin_http_fuzz)
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus)
  add_test(NAME fuzz_http_conn_30s
           COMMAND fuzz_http_conn -max_total_time=30 -timeout=10 -rss_limit_mb=1024
                   -dict=${_http_root}/tests/fuzz/http.dict
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus ${_http_root}/tests/fuzz/corpus)
  set_tests_properties(fuzz_http_conn_30s PROPERTIES TIMEOUT 120)
  # WebSocket frames, UTF-8 and permessage-deflate (host/ws_frame.c)
  if(TARGET appbin_ws)
    add_library(appbin_ws_fuzz STATIC ${_http_root}/host/ws_frame.c)
    target_include_directories(appbin_ws_fuzz PUBLIC ${_http_root}/host)
    target_compile_options(appbin_ws_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined
                           -fno-sanitize-recover=undefined -Wno-error)
    target_link_libraries(appbin_ws_fuzz PUBLIC ${ZLIB_STATIC} ${CRYPTO_STATIC} pthread dl)
    add_executable(fuzz_ws_frame ${_http_root}/tests/fuzz/fuzz_ws_frame.c)
    target_compile_options(fuzz_ws_frame PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(fuzz_ws_frame PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_ws_frame PRIVATE appbin_ws_fuzz)
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz-ws-corpus)
    add_test(NAME fuzz_ws_frame_30s
             COMMAND fuzz_ws_frame -max_total_time=30 -timeout=10 -rss_limit_mb=1024
                     ${CMAKE_CURRENT_BINARY_DIR}/fuzz-ws-corpus)
    set_tests_properties(fuzz_ws_frame_30s PROPERTIES TIMEOUT 120)
  endif()
endif()
