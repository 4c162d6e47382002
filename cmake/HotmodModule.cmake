# hotmod_add_module(<name> [VERSION_DEFINE <n>] <sources>...)
#
# Builds a reloadable module the way hotmod expects: a MODULE library (a .so that nothing
# links against), position-independent, hidden visibility by default (export functions with
# HM_MODULE_EXPORT from hotmod/module.h), calls between the module's own functions bound
# inside the module (-Bsymbolic, so a host built with -rdynamic cannot capture them), and
# hotmod's headers on the include path. The output has no "lib" prefix: <name>.so.
function(hotmod_add_module name)
  add_library(${name} MODULE ${ARGN})
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    POSITION_INDEPENDENT_CODE ON
    C_VISIBILITY_PRESET hidden)
  if(TARGET hotmod::hotmod)
    target_include_directories(${name} PRIVATE $<TARGET_PROPERTY:hotmod::hotmod,INTERFACE_INCLUDE_DIRECTORIES>)
  endif()
  target_link_options(${name} PRIVATE -Wl,-Bsymbolic -Wl,-z,now)
endfunction()
