// `pgrouter-ctl consul-hook`: the handler of a Consul `service` watch (SPEC §6).
#pragma once

#include <string>
#include <vector>

namespace pgrouter::ctl {

// `args` are the words after "consul-hook"; `conninfo` the admin console's libpq
// connection string (--admin may also be given among `args`). Reads the whole of
// stdin. Returns the exit status: 0 applied, 1 pgrouter unreachable or a command
// refused, 2 invalid JSON, 3 split brain, 4 no healthy primary, 64 bad usage.
int consul_hook(std::string conninfo, const std::vector<std::string>& args);

}  // namespace pgrouter::ctl
