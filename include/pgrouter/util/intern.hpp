// Equal strings shared by the objects of one thread that hold them: names and
// parameter values that thousands of idle clients have in common are kept once.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace pgrouter::util {

// The thread's shared copy of `s` (made if none is alive). Entries die with their
// last holder and are swept from the thread's table as it grows.
std::shared_ptr<const std::string> intern(std::string s);

// A string held through intern(): 16 bytes, and the text once per thread.
class SharedString {
public:
    SharedString() = default;
    SharedString& operator=(std::string_view v) {
        p_ = v.empty() ? nullptr : intern(std::string(v));
        return *this;
    }
    const std::string& str() const { return p_ ? *p_ : empty_string(); }
    operator const std::string&() const { return str(); }
    operator std::string_view() const { return str(); }
    friend std::string operator+(std::string a, const SharedString& b) { return a += b.str(); }
    friend std::string operator+(const char* a, const SharedString& b) { return std::string(a) + b.str(); }
    bool empty() const { return !p_ || p_->empty(); }
    bool operator==(std::string_view v) const { return str() == v; }

private:
    static const std::string& empty_string();
    std::shared_ptr<const std::string> p_;
};

}  // namespace pgrouter::util
