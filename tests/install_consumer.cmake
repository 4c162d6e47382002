# hotmod as another project sees it: install the build into a temporary prefix (not the
# configured one), then configure, build and run the consumer project (tests/consumer) out of
# tree against that prefix, once through the CMake package (find_package + hotmod_add_module
# ... CHECK; Ninja when there is one) and once through pkg-config (Unix Makefiles, and a
# plain `cc` line). Also checks the installed soname, the package's version rule (0.x: the
# same minor only), hotmod-check and hotmodctl in bin/, and that the hosts run with the
# installed library.
#   cmake -DBIN=<build dir> -DWORK=<scratch dir> -DSRC=<tests/consumer> -DVERSION=<x.y.z>
#         -DCC=<C compiler> [-DCFLAGS=<flags>] -DPKG_CONFIG=<pkg-config>
#         -DREADELF=<readelf> -DBINDIR=<bin dir> -DLIBDIR=<lib dir> -P install_consumer.cmake
unset(ENV{LD_LIBRARY_PATH}) # the hosts find libhotmod through their RUNPATH only
set(prefix "${WORK}/prefix")
string(REGEX REPLACE "([][+.*()^$?|\\])" "\\\\\\1" rx "${prefix}") # for regexes
set(flags "-Wall -Wextra -Werror ${CFLAGS}")
string(TIMESTAMP start "%s")

macro(fail text)
  file(REMOVE_RECURSE "${WORK}")
  message(FATAL_ERROR "${text}")
endmacro()

# run(<what> <output variable> <command...>): the command must exit 0.
function(run what outvar)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    fail("${what} failed (${rc}):\n${ARGN}\n${out}${err}")
  endif()
  set(${outvar} "${out}${err}" PARENT_SCOPE)
endfunction()

function(step text)
  string(TIMESTAMP now "%s")
  math(EXPR t "${now} - ${start}")
  message("[${t} s] ${text}")
endfunction()

# A host runs with the installed libhotmod, reloads, and reports the versions it called.
function(check_host host dir)
  run("the dynamic loader on ${host}" deps ${CMAKE_COMMAND} -E env LD_TRACE_LOADED_OBJECTS=1 ${host})
  if(NOT deps MATCHES "libhotmod[^\n]*=> ${rx}/")
    fail("${host} does not load the installed libhotmod:\n${deps}")
  endif()
  run("${host}" out ${host} ${dir}/greet_v1.so ${dir}/greet_v2.so)
  if(NOT out MATCHES "live handle: version 2; snapshot: version 1")
    fail("${host}: unexpected output:\n${out}")
  endif()
  step("${host}: ${CMAKE_MATCH_0}")
endfunction()

file(REMOVE_RECURSE "${WORK}")
run("cmake --install --prefix ${prefix}" out ${CMAKE_COMMAND} --install "${BIN}" --prefix "${prefix}")
step("installed into ${prefix}")

# The shared library's soname and the package version follow the ABI: 0.minor while 0.x.
string(REPLACE "." ";" v "${VERSION}")
list(GET v 0 major)
list(GET v 1 minor)
if(major EQUAL 0)
  set(soname libhotmod.so.0.${minor})
else()
  set(soname libhotmod.so.${major})
endif()
set(libdir "${prefix}/${LIBDIR}")
run("readelf -d libhotmod.so" dyn ${READELF} -d "${libdir}/libhotmod.so")
string(REGEX MATCH "\\(SONAME\\)[^[]*\\[([^]]*)\\]" got "${dyn}")
set(got "${CMAKE_MATCH_1}")
if(NOT got STREQUAL soname)
  fail("installed libhotmod.so has SONAME '${got}', expected ${soname}")
endif()
run("installed hotmod-check --help" out "${prefix}/${BINDIR}/hotmod-check" --help)
run("installed hotmodctl --help" out "${prefix}/${BINDIR}/hotmodctl" --help)
step("SONAME ${got}; ${BINDIR}/hotmod-check and ${BINDIR}/hotmodctl run")

# (i) The CMake package.
find_program(NINJA NAMES ninja ninja-build)
if(NINJA)
  set(gen Ninja)
else()
  set(gen "Unix Makefiles")
endif()
set(build "${WORK}/cmake")
run("configure with find_package (${gen})" out ${CMAKE_COMMAND} -S "${SRC}" -B "${build}"
  -G "${gen}" -DCMAKE_PREFIX_PATH=${prefix} -DHOTMOD_WANT=${major}.${minor}
  -DCMAKE_C_COMPILER=${CC} "-DCMAKE_C_FLAGS=${flags}")
file(STRINGS "${build}/CMakeCache.txt" dir REGEX "^hotmod_DIR:")
if(NOT dir MATCHES "=${rx}/")
  fail("find_package found another hotmod: ${dir}")
endif()
run("build with find_package (${gen})" out ${CMAKE_COMMAND} --build "${build}" --verbose)
if(NOT out MATCHES "${rx}/${BINDIR}/hotmod-check[^\n]*greet_v1.so")
  fail("hotmod_add_module(... CHECK) did not run the installed hotmod-check:\n${out}")
endif()
step("find_package(hotmod ${major}.${minor}) + hotmod_add_module(CHECK): built with ${gen}")
check_host("${build}/host" "${build}")

# The version rule: another minor (or major) is refused.
math(EXPR next "${minor} + 1")
math(EXPR other "${major} + 1")
set(refused ${major}.${next} ${other}.${minor})
if(major EQUAL 0 AND minor GREATER 0)
  math(EXPR prev "${minor} - 1")
  list(APPEND refused 0.${prev})
endif()
foreach(want IN LISTS refused)
  execute_process(COMMAND ${CMAKE_COMMAND} -DHOTMOD_WANT=${want} "${build}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "requested version \"${want}\"")
    fail("find_package(hotmod ${want}) with ${VERSION} installed: exit ${rc}\n${out}${err}")
  endif()
endforeach()
string(REPLACE ";" ", " refused "${refused}")
step("find_package refuses ${refused}")

# (ii) pkg-config: its flags point into the prefix (hotmod.pc is relocatable).
set(ENV{PKG_CONFIG_PATH} "${libdir}/pkgconfig")
run("pkg-config --cflags hotmod" cflags ${PKG_CONFIG} --cflags hotmod)
run("pkg-config --libs hotmod" libs ${PKG_CONFIG} --libs hotmod)
string(STRIP "${cflags}" cflags)
string(STRIP "${libs}" libs)
string(REGEX REPLACE "^-I([^ ]*).*" "\\1" inc "${cflags}")
string(REGEX REPLACE "^-L([^ ]*).*" "\\1" lib "${libs}")
file(REAL_PATH "${inc}" inc)
file(REAL_PATH "${lib}" lib)
file(REAL_PATH "${libdir}" real_libdir)
file(REAL_PATH "${prefix}" real_prefix)
string(FIND "${inc}" "${real_prefix}/" at)
if(NOT EXISTS "${inc}/hotmod.h" OR NOT at EQUAL 0 OR NOT lib STREQUAL real_libdir)
  fail("hotmod.pc does not point into ${prefix}: ${cflags} ${libs}")
endif()
step("pkg-config: ${cflags} ${libs}")
separate_arguments(cflags UNIX_COMMAND "${cflags}")
separate_arguments(libs UNIX_COMMAND "${libs}")
separate_arguments(warn UNIX_COMMAND "${flags}")
set(build "${WORK}/pkgconfig")
run("configure with pkg-config (Unix Makefiles)" out ${CMAKE_COMMAND} -S "${SRC}" -B "${build}"
  -G "Unix Makefiles" -DUSE_PKGCONFIG=ON -DCMAKE_C_COMPILER=${CC} "-DCMAKE_C_FLAGS=${flags}")
run("build with pkg-config (Unix Makefiles)" out ${CMAKE_COMMAND} --build "${build}")
foreach(v 1 2)
  run("the module, by hand" out ${CC} -shared -fPIC -fvisibility=hidden -Wl,-Bsymbolic -Wall
    -Wextra -Werror ${cflags} -DVERSION=${v} -o "${build}/greet_v${v}.so" "${SRC}/greet.c")
endforeach()
run("the host, by hand" out ${CC} ${warn} ${cflags} -o "${build}/host-cc" "${SRC}/main.c"
  ${libs} -Wl,-rpath,${libdir})
step("pkg_check_modules host (Unix Makefiles), cc host and cc modules built")
check_host("${build}/host" "${build}")
check_host("${build}/host-cc" "${build}")

# A host linked with the installed static library, installed into the prefix's bin: it finds
# the crash-containment helper in that prefix (relative to itself), not under the prefix
# hotmod was configured with.
# What the static library needs is what hotmod.pc requires privately (libuv, and libsodium
# when signed builds are in).
run("pkg-config --print-requires-private hotmod" reqs ${PKG_CONFIG} --print-requires-private hotmod)
string(REGEX REPLACE "[ \t]*[<>=]+[ \t]*[^ \t\n]+" "" reqs "${reqs}")
separate_arguments(reqs UNIX_COMMAND "${reqs}")
run("pkg-config --static --libs ${reqs}" uvlibs ${PKG_CONFIG} --static --libs ${reqs})
string(STRIP "${uvlibs}" uvlibs)
separate_arguments(uvlibs UNIX_COMMAND "${uvlibs}")
set(static_host "${prefix}/${BINDIR}/hotmod-consumer-static")
run("the host, linked with libhotmod.a" out ${CC} ${warn} ${cflags} -o "${static_host}"
  "${SRC}/main.c" "${libdir}/libhotmod.a" ${uvlibs} -ldl -lpthread)
unset(ENV{HOTMOD_PROBE})
run("${static_host} with the probe" out ${static_host} ${build}/greet_v1.so ${build}/greet_v2.so
  probe)
if(NOT out MATCHES "live handle: version 2; snapshot: version 1")
  fail("${static_host}: unexpected output:\n${out}")
endif()
step("a host linked with libhotmod.a finds ${prefix}'s hotmod-probe")

file(REMOVE_RECURSE "${WORK}")
step("done")
