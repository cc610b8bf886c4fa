# The archfs path fuzzer (APPBIN_FUZZ=ON, clang): archfs and zipindex rebuilt
# with coverage, archives written per input by ziptest.
if(APPBIN_FUZZ)
  set(_archfs_root ${CMAKE_CURRENT_LIST_DIR}/../..)
  add_library(appbin_archfs_fuzz STATIC ${_archfs_root}/host/archfs.c ${_archfs_root}/host/zipindex.c
                                        ${_archfs_root}/host/sha256.c)
  target_include_directories(appbin_archfs_fuzz PUBLIC ${_archfs_root}/host)
  target_compile_options(appbin_archfs_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
  target_link_libraries(appbin_archfs_fuzz PUBLIC ${ZSTD_STATIC} ${ZLIB_STATIC} ${CRYPTO_STATIC}
                                                   pthread dl)
  add_executable(fuzz_archfs_path ${_archfs_root}/tests/fuzz/fuzz_archfs_path.c
                                  ${CMAKE_CURRENT_LIST_DIR}/ziptest.c)
  target_include_directories(fuzz_archfs_path PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(fuzz_archfs_path PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_archfs_path PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_archfs_path PRIVATE appbin_archfs_fuzz)
endif()
