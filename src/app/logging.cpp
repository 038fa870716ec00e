// The one sink pgrouter logs through: stderr or a file it can reopen, text or
// JSON lines, switchable while other threads log (under the sink's mutex).
#include "pgrouter/app/logging.hpp"

#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

namespace pgrouter::app {

namespace {

constexpr const char* kTextPattern = "%Y-%m-%d %H:%M:%S.%e %z [%P] %l %v";
// %j is JsonMsg below: the message, escaped for a JSON string.
constexpr const char* kJsonPattern = R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","pid":%P,"msg":"%j"})";

// Length of the valid UTF-8 sequence at s[i], 0 when it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
    auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned c = b(i);
    std::size_t n;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;  // overlong
        if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;  // overlong
        if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    if (b(i + 1) < lo || b(i + 1) > hi) return 0;
    for (std::size_t k = 2; k < n; ++k)
        if ((b(i + k) & 0xC0) != 0x80) return 0;
    return n;
}

template <class Out>
void escape_into(Out& out, std::string_view s) {
    auto put = [&](std::string_view t) { out.append(t.data(), t.data() + t.size()); };
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            std::size_t n = utf8_length(s, i);
            if (n == 0) {
                put("\\ufffd");
                ++i;
            } else {
                put(s.substr(i, n));
                i += n;
            }
            continue;
        }
        switch (c) {
        case '"': put("\\\""); break;
        case '\\': put("\\\\"); break;
        case '\n': put("\\n"); break;
        case '\r': put("\\r"); break;
        case '\t': put("\\t"); break;
        default:
            if (c < 0x20 || c == 0x7F) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                put(buf);
            } else {
                out.push_back(static_cast<char>(c));
            }
        }
        ++i;
    }
}

class JsonMsg final : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
        escape_into(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    }
    std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMsg>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter(config::LogFormat format) {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    if (format == config::LogFormat::json) {
        f->add_flag<JsonMsg>('j');
        f->set_pattern(kJsonPattern);
    } else {
        f->set_pattern(kTextPattern);
    }
    return f;
}

// stderr, or a file opened in append mode that SIGHUP reopens by path.
class LogSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    ~LogSink() override {
        if (file_) std::fclose(file_);
    }
    // "" = stderr. On error the current destination stays.
    std::string open(const std::string& path) {
        std::lock_guard lk(mutex_);
        if (path.empty()) {
            if (file_) std::fclose(file_);
            file_ = nullptr;
            return {};
        }
        FILE* f = std::fopen(path.c_str(), "ae");
        if (!f) return fmt::format("cannot open logfile {}: {}", path, std::strerror(errno));
        if (file_) std::fclose(file_);
        file_ = f;
        return {};
    }
    void use_format(config::LogFormat format) {
        std::lock_guard lk(mutex_);
        if (format_ == format) return;
        format_ = format;
        formatter_ = make_formatter(format);
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t buf;
        formatter_->format(msg, buf);
        std::fwrite(buf.data(), 1, buf.size(), out());
    }
    void flush_() override { std::fflush(out()); }

private:
    FILE* out() { return file_ ? file_ : stderr; }
    FILE* file_ = nullptr;
    config::LogFormat format_ = config::LogFormat::text;
};

std::shared_ptr<LogSink> current_sink() {
    auto logger = spdlog::default_logger();
    if (!logger) return nullptr;
    for (auto& s : logger->sinks())
        if (auto ls = std::dynamic_pointer_cast<LogSink>(s)) return ls;
    return nullptr;
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) { escape_into(out, s); }

namespace {
int cli_verbosity = 0;  // from the command line: -q (-1) or -v given N times

spdlog::level::level_enum level_for(const config::Settings& st) {
    if (cli_verbosity < 0) return spdlog::level::warn;
    int v = std::max(cli_verbosity, st.verbose);
    return v >= 2 ? spdlog::level::trace : v == 1 ? spdlog::level::debug : spdlog::level::info;
}
}  // namespace

std::string setup_logging(const config::Settings& st, int verbosity) {
    cli_verbosity = verbosity;
    auto sink = std::make_shared<LogSink>();
    sink->set_formatter(make_formatter(config::LogFormat::text));
    sink->use_format(st.log_format);
    std::string error = sink->open(st.logfile);
    auto logger = std::make_shared<spdlog::logger>("pgrouter", sink);
    logger->set_level(level_for(st));
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
    return error;
}

void apply_log_level(const config::Settings& st) { spdlog::default_logger()->set_level(level_for(st)); }

std::string reopen_logs(const config::Settings& st) {
    auto sink = current_sink();
    if (!sink) return setup_logging(st, 0);
    apply_log_level(st);  // verbose may have changed
    sink->use_format(st.log_format);
    return sink->open(st.logfile);
}

}  // namespace pgrouter::app
