#include "pgrouter/session/errors.hpp"

#include "pgrouter/protocol/protocol.hpp"

namespace pgrouter::session {

void write_pooler_error(std::string& out, std::string_view state, std::string_view message, bool fatal) {
    protocol::write_error_response(out, fatal ? "FATAL" : "ERROR", state, message);
}

}  // namespace pgrouter::session
