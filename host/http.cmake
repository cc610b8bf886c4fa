# appbin_http: the HTTP/1.1 server layer on libuv + llhttp (no Python).
# Included from the top-level CMakeLists.txt after the llhttp target exists.

# llhttp's strict mode rejects a bare CR ending the head ("\r\n\r" + data,
# CVE-2023-30589 shape), whitespace before the colon, non-ASCII in the
# request-target and a missing CRLF after a chunk. Our copy of llhttp is only
# used by this layer.
target_compile_definitions(llhttp PRIVATE LLHTTP_STRICT_MODE=1)

# TLS (http_tls.c): Debian's OpenSSL 3, linked statically and kept out of
# the dynamic symbol table (CMakeLists.txt), apart from the libssl.so.3 that
# Python's _ssl module loads.
find_library(SSL_STATIC NAMES libssl.a REQUIRED)
find_library(CRYPTO_STATIC NAMES libcrypto.a REQUIRED)
add_library(appbin_http STATIC
  ${CMAKE_CURRENT_LIST_DIR}/http_server.c
  ${CMAKE_CURRENT_LIST_DIR}/http_conn.c
  ${CMAKE_CURRENT_LIST_DIR}/http_response.c
  ${CMAKE_CURRENT_LIST_DIR}/http_date.c
  ${CMAKE_CURRENT_LIST_DIR}/http_tls.c)
target_include_directories(appbin_http PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(appbin_http PUBLIC llhttp ${LIBUV_STATIC} ${SSL_STATIC} ${CRYPTO_STATIC}
                      pthread dl)

# The ASGI bridge (host/asgi.c...) is added here by the lead.
set(APPBIN_HTTP_PY_SOURCES "")

# appbin_ws: WebSocket frames, UTF-8 validation and permessage-deflate
# (zlib; libcrypto for the handshake's SHA-1). No sockets, no Python.
find_library(ZLIB_STATIC NAMES libz.a REQUIRED)
add_library(appbin_ws STATIC ${CMAKE_CURRENT_LIST_DIR}/ws_frame.c)
target_include_directories(appbin_ws PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(appbin_ws PUBLIC ${ZLIB_STATIC} ${CRYPTO_STATIC} pthread dl)
