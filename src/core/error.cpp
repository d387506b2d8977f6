// src/core/error.cpp — kvq::Error: what() reads "<function>: <argument>: <message>".
#include "kvq/error.h"

#include <utility>

namespace kvq {
namespace {

std::string compose(const std::string& function, const std::string& argument,
                    const std::string& message) {
  std::string s;
  if (!function.empty()) s += function + ": ";
  if (!argument.empty()) s += argument + ": ";
  s += message;
  return s;
}

}  // namespace

Error::Error(ErrorKind kind, std::string function, std::string argument, std::string message)
    : std::runtime_error(compose(function, argument, message)),
      kind_(kind),
      function_(std::move(function)),
      argument_(std::move(argument)) {}

}  // namespace kvq
