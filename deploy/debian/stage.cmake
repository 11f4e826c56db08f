# Run by CPack (CPACK_PRE_BUILD_SCRIPTS) on the staged install, before the
# .deb is made: the Debian layout on top of `cmake --install`.
#  - /etc/liaison/broker.yaml and policies/vocabulary.yaml: conffiles
#    (deploy/debian/conffiles); no agency is live after installing.
#  - the example agencies and DPO tests: /usr/share/doc/liaison/examples/policies
#  - man pages from each binary's --help (help2man).
set(root "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
if(NOT EXISTS "${root}/usr/bin/liaison-broker")
  message(FATAL_ERROR "stage.cmake: no usr/bin/liaison-broker under ${root}")
endif()
set(doc "${root}/usr/share/doc/liaison")

file(MAKE_DIRECTORY "${root}/etc/liaison/policies/agencies" "${root}/etc/liaison/keys")
file(COPY_FILE "${doc}/examples/broker.yaml" "${root}/etc/liaison/broker.yaml")
file(COPY_FILE "${root}/usr/share/liaison/policies/vocabulary.yaml" "${root}/etc/liaison/policies/vocabulary.yaml")
file(COPY "${root}/usr/share/liaison/policies/" DESTINATION "${doc}/examples/policies")
file(REMOVE_RECURSE "${root}/usr/share/liaison")

find_program(HELP2MAN help2man REQUIRED)
find_program(GZIP gzip REQUIRED)

# What Debian policy wants of every package's doc folder (lintian
# no-copyright-file, no-changelog): the copyright file, and for a native
# package (no Debian revision) changelog.gz in the Debian changelog format.
# The date is SOURCE_DATE_EPOCH's when set, so the package can be rebuilt
# byte for byte.
file(COPY_FILE "${CPACK_LIAISON_SOURCE_DIR}/deploy/debian/copyright" "${doc}/copyright")
string(TIMESTAMP changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
file(WRITE "${doc}/changelog"
"liaison (${CPACK_PACKAGE_VERSION}) unstable; urgency=medium

  * Release ${CPACK_PACKAGE_VERSION}; the source history is in git.

 -- ${CPACK_PACKAGE_CONTACT}  ${changelog_date}
")
execute_process(COMMAND "${GZIP}" -9nf "${doc}/changelog" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip ${doc}/changelog failed")
endif()
file(MAKE_DIRECTORY "${root}/usr/share/man/man1")
foreach(pair "liaison-broker|policy-enforcing message broker" "liaison|command-line agent and operator tool"
             "liaison-gateway|HTTPS gateway for an agency's system")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 bin)
  list(GET pair 1 name)
  set(page "${root}/usr/share/man/man1/${bin}.1")
  execute_process(COMMAND "${HELP2MAN}" --no-info --no-discard-stderr --name "${name}" --output "${page}"
                          "${root}/usr/bin/${bin}"
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man ${bin}: ${err}")
  endif()
  execute_process(COMMAND "${GZIP}" -9n "${page}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${page} failed")
  endif()
endforeach()
