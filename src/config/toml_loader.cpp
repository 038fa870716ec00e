// The TOML loader: walks the document with toml++, hands every key to the field
// tables (fields.cpp), reports unknown keys and sections, then validates the whole.
#include "pgrouter/config/config.hpp"

#include <algorithm>
#include <exception>
#include <functional>

#include <toml++/toml.h>

namespace pgrouter::config {

namespace {

using Setter = std::function<SetResult(std::string_view key, const SettingValue&)>;

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }

const char* node_type_name(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::date: return "a date";
        case toml::node_type::time: return "a time";
        case toml::node_type::date_time: return "a date-time";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a float";
        case toml::node_type::boolean: return "a boolean";
        default: return "a value";
    }
}

class TomlLoader {
public:
    explicit TomlLoader(const std::string& path) : path_(path) { cfg_.path = path; }

    LoadResult load(std::string_view text) {
        try {
            toml::table root = toml::parse(text, path_);
            load_root(root);
        } catch (const toml::parse_error& e) {
            parse_failed_ = true;
            add(static_cast<int>(e.source().begin.line), "", std::string(e.description()));
        } catch (const std::exception& e) {
            parse_failed_ = true;
            add(0, "", std::string("cannot load: ") + e.what());
        }
        return finish();
    }

private:
    void add(int line, std::string key, std::string reason) {
        problems_.push_back({path_, line, std::move(key), std::move(reason)});
    }

    void note(const std::string& key, int line) { sources_[key] = {path_, line, key}; }

    LoadResult finish() {
        if (!parse_failed_) {
            auto more = validate(cfg_, sources_, problems_);
            problems_.insert(problems_.end(), more.begin(), more.end());
        }
        std::stable_sort(problems_.begin(), problems_.end(),
                         [](const Problem& a, const Problem& b) { return a.line < b.line; });
        LoadResult r;
        bool errors = std::any_of(problems_.begin(), problems_.end(),
                                  [](const Problem& p) { return !p.warning; });
        if (!errors) r.config = std::move(cfg_);
        r.problems = std::move(problems_);
        return r;
    }

    void load_root(const toml::table& root) {
        for (auto&& [k, node] : root) {
            std::string key(k.str());
            if (key == "pgrouter" || key == "tls")
                load_settings(key, node);
            else if (key == "clusters")
                for_each_named(key, node, [this](auto& name, auto& t) { load_cluster(name, t); });
            else if (key == "databases")
                for_each_named(key, node, [this](auto& name, auto& t) { load_database(name, t); });
            else if (key == "users")
                for_each_named(key, node, [this](auto& name, auto& t) { load_user(name, t); });
            else
                add(line_of(node), key, node.is_table() ? "unknown section" : "unknown key");
        }
    }

    const toml::table* section(const std::string& key, const toml::node& node) {
        const toml::table* t = node.as_table();
        if (!t) add(line_of(node), key, std::string("expected a table, got ") + node_type_name(node));
        if (t) note(key, line_of(node));
        return t;
    }

    void load_settings(const std::string& name, const toml::node& node) {
        if (const auto* t = section(name, node))
            load_keys(name, *t, {}, [this, &name](std::string_view k, const SettingValue& v) {
                return set_setting(cfg_, name, k, v);
            });
    }

    // [clusters.NAME], [databases.NAME], [users.NAME]: a table of tables.
    template <class F>
    void for_each_named(const std::string& key, const toml::node& node, F&& load_one) {
        const toml::table* t = section(key, node);
        if (!t) return;
        for (auto&& [k, sub] : *t) {
            std::string name(k.str());
            std::string path = key + "." + name;
            if (name.empty()) {
                add(line_of(sub), key, "empty name");
                continue;
            }
            if (const auto* st = section(path, sub)) load_one(name, *st);
        }
    }

    void load_cluster(const std::string& name, const toml::table& t) {
        std::string prefix = "clusters." + name;
        ClusterConfig& c = cfg_.clusters[name];
        load_keys(prefix, t, "discovery", [&c](std::string_view k, const SettingValue& v) {
            return set_cluster_key(c, k, v);
        });
        const toml::node* d = t.get("discovery");
        if (!d) return;
        std::string dprefix = prefix + ".discovery";
        if (const auto* dt = section(dprefix, *d))
            load_keys(dprefix, *dt, {}, [&c](std::string_view k, const SettingValue& v) {
                return set_discovery_key(c.discovery, k, v);
            });
    }

    void load_database(const std::string& name, const toml::table& t) {
        DatabaseConfig& db = name == "*" ? cfg_.fallback_database.emplace() : cfg_.databases[name];
        load_keys("databases." + name, t, {}, [&db](std::string_view k, const SettingValue& v) {
            return set_database_key(db, k, v);
        });
    }

    void load_user(const std::string& name, const toml::table& t) {
        UserConfig& u = cfg_.users[name];
        load_keys("users." + name, t, {}, [&u](std::string_view k, const SettingValue& v) {
            return set_user_key(u, k, v);
        });
    }

    // Every key of `t` through `set`, except `skip` (a sub-table handled by the caller).
    void load_keys(const std::string& prefix, const toml::table& t, std::string_view skip,
                   const Setter& set) {
        for (auto&& [k, node] : t) {
            if (!skip.empty() && k.str() == skip) continue;
            std::string key = prefix + "." + std::string(k.str());
            int line = line_of(node);
            note(key, line);
            std::string why;
            auto value = to_value(node, why);
            SetResult r = value ? set(k.str(), *value) : SetResult{SetStatus::bad_value, why};
            if (r.status == SetStatus::unknown_key)
                add(line, key, node.is_table() ? "unknown section" : "unknown key");
            else if (!r.ok())
                add(line, key, r.reason);
        }
    }

    static std::optional<SettingValue> to_value(const toml::node& n, std::string& why) {
        if (const auto* s = n.as_string()) return SettingValue{s->get()};
        if (const auto* i = n.as_integer()) return SettingValue{i->get()};
        if (const auto* f = n.as_floating_point()) return SettingValue{f->get()};
        if (const auto* b = n.as_boolean()) return SettingValue{b->get()};
        if (const auto* a = n.as_array()) {
            std::vector<std::string> items;
            for (const auto& e : *a) {
                if (!e.is_string()) {
                    why = "expected an array of strings, found " + std::string(node_type_name(e)) +
                          " in it";
                    return std::nullopt;
                }
                items.push_back(e.as_string()->get());
            }
            return SettingValue{std::move(items)};
        }
        why = std::string("expected a value, got ") + node_type_name(n);
        return std::nullopt;
    }

    std::string path_;
    Config cfg_;
    KeySources sources_;
    std::vector<Problem> problems_;
    bool parse_failed_ = false;
};

}  // namespace

LoadResult load_toml_string(std::string_view text, const std::string& path_for_messages) {
    return TomlLoader(path_for_messages).load(text);
}

}  // namespace pgrouter::config
