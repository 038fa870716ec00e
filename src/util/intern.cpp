#include "pgrouter/util/intern.hpp"

#include <algorithm>
#include <unordered_map>

namespace pgrouter::util {

namespace {
struct InternTable {
    std::unordered_multimap<std::size_t, std::weak_ptr<const std::string>> map;
    std::size_t sweep_at = 64;
};
}  // namespace

std::shared_ptr<const std::string> intern(std::string s) {
    thread_local InternTable table;
    auto h = std::hash<std::string>{}(s);
    auto [b, e] = table.map.equal_range(h);
    for (auto it = b; it != e;) {
        if (auto sp = it->second.lock()) {
            if (*sp == s) return sp;
            ++it;
        } else {
            it = table.map.erase(it);
        }
    }
    auto sp = std::make_shared<const std::string>(std::move(s));
    table.map.emplace(h, sp);
    if (table.map.size() >= table.sweep_at) {
        std::erase_if(table.map, [](auto& kv) { return kv.second.expired(); });
        table.sweep_at = std::max<std::size_t>(64, 2 * table.map.size());
    }
    return sp;
}

const std::string& SharedString::empty_string() {
    static const std::string empty;
    return empty;
}

}  // namespace pgrouter::util
