# Run the example and check it: exit status 0, a verdict "as in Python" under each of the four
# behaviours, and none that differs.   cmake -DPROGRAM=<python_reload> -P check.cmake
execute_process(COMMAND ${PROGRAM} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "python_reload exited with ${rc}")
endif()
string(REPLACE ";" "," text "${out}") # a list's separator
string(REGEX MATCHALL "\n\\((a|b|c|c')\\) [^\n]*\n  python: [^\n]*\n  C: [^\n]*\n  => as in Python\n"
       ok "\n${text}")
list(LENGTH ok n)
if(NOT n EQUAL 4 OR out MATCHES "DIFFERS" OR NOT out MATCHES "\n0 of 4 behaviours differ")
  message(FATAL_ERROR "expected four behaviours as in Python, found ${n}")
endif()
