# An install into a prefix other than the configured one, then pkg-config on the installed
# hotmod.pc: its flags must point into that prefix (hotmod.pc finds it from ${pcfiledir}).
#   cmake -DBIN=<build dir> -DPREFIX=<temporary prefix> -DPKG_CONFIG=<pkg-config> -P install_pc.cmake
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BIN}" --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${BIN} --prefix ${PREFIX} failed: ${rc}")
endif()
file(GLOB_RECURSE pcs "${PREFIX}/*/hotmod.pc")
list(LENGTH pcs n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one installed hotmod.pc, found: ${pcs}")
endif()
get_filename_component(pcdir "${pcs}" DIRECTORY)
set(ENV{PKG_CONFIG_PATH} "${pcdir}")
execute_process(COMMAND ${PKG_CONFIG} --cflags-only-I hotmod OUTPUT_VARIABLE cflags
                RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
execute_process(COMMAND ${PKG_CONFIG} --libs-only-L hotmod OUTPUT_VARIABLE libs
                OUTPUT_STRIP_TRAILING_WHITESPACE)
message("pkg-config: ${cflags} ${libs}")
string(REGEX REPLACE "^-I" "" inc "${cflags}")
string(REGEX REPLACE "^-L" "" lib "${libs}")
if(NOT rc EQUAL 0 OR NOT EXISTS "${inc}/hotmod.h" OR NOT EXISTS "${lib}/libhotmod.so")
  message(FATAL_ERROR "hotmod.pc does not point into ${PREFIX}: ${cflags} ${libs}")
endif()
file(REMOVE_RECURSE "${PREFIX}")
