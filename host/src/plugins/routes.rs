//! Route patterns and the immutable route table.
//!
//! A pattern is matched segment by segment; a segment is literal text, a
//! parameter `:name`, or a parameter after a literal prefix (`@:handle`);
//! a last segment `...` (Spin's spelling) matches the rest of the path,
//! however long, or nothing. When several patterns match a path, the most
//! specific wins, comparing segment by segment: literal beats prefixed
//! parameter beats bare parameter beats `...`. That is Werkzeug's rule,
//! which the ported Flask service relied on: `/api/activities/home` is not
//! taken as `/api/activities/:uuid`.
//!
//! A route's method may be `*`: any method, less specific than a named one.

use std::{collections::HashMap, fmt, str::FromStr, sync::Arc};

/// A parsed route pattern such as `/api/activities/@:handle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// Shared: the pattern is `http.route` on every request's span and
    /// metrics, which then copy none of it.
    text: Arc<str>,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param {
        prefix: String,
        name: String,
    },
    /// `...`: the rest of the path.
    Rest,
}

/// The method a route serves: one HTTP method, or `*` for any method
/// (after a route naming it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMethod {
    /// This method only (a `GET` route serves `HEAD` too, when no route
    /// names `HEAD`).
    Only(http::Method),
    /// `*`: any method.
    Any,
}

impl RouteMethod {
    /// The methods a manifest may route, besides `*`: those a browser or
    /// API client sends to an application (not `CONNECT` or `TRACE`).
    pub const ROUTABLE: [http::Method; 7] = [
        http::Method::GET,
        http::Method::HEAD,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::PATCH,
        http::Method::OPTIONS,
    ];

    /// Whether this route method and `other` can serve the same request.
    fn overlaps(&self, other: &RouteMethod) -> bool {
        match (self, other) {
            (RouteMethod::Only(one), RouteMethod::Only(other)) => one == other,
            _ => true,
        }
    }
}

/// A route method that is neither `*` nor one of [`RouteMethod::ROUTABLE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route method {method:?} is not one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, *")]
pub struct MethodError {
    /// The method as written, cut to its first 32 characters.
    pub method: String,
}

impl FromStr for RouteMethod {
    type Err = MethodError;

    /// Upper case, as HTTP methods are case-sensitive (RFC 9110 9.1).
    fn from_str(text: &str) -> Result<Self, MethodError> {
        if text == "*" {
            return Ok(RouteMethod::Any);
        }
        RouteMethod::ROUTABLE
            .into_iter()
            .find(|method| method.as_str() == text)
            .map(RouteMethod::Only)
            .ok_or_else(|| MethodError {
                method: text.chars().take(32).collect(),
            })
    }
}

impl fmt::Display for RouteMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteMethod::Only(method) => f.write_str(method.as_str()),
            RouteMethod::Any => f.write_str("*"),
        }
    }
}

/// The longest route pattern accepted: a plugin's pattern names every span
/// and metric of the requests it serves.
pub(crate) const MAX_PATTERN_BYTES: usize = 256;

/// The last segment that matches the rest of the path.
const REST: &str = "...";

/// Why a route pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Patterns are absolute paths.
    #[error("route pattern {0:?} must start with '/'")]
    NotAbsolute(String),
    /// Too long, or not printable ASCII (a request's path is, so such a
    /// pattern could never match); shown cut to its start.
    #[error(
        "route pattern {start:?}… ({bytes} bytes) must be at most {MAX_PATTERN_BYTES} bytes \
         of printable ASCII"
    )]
    Unfit {
        /// The pattern's first characters.
        start: String,
        /// Its length.
        bytes: usize,
    },
    /// `:` with nothing after it.
    #[error("route pattern {0:?} has a parameter without a name")]
    UnnamedParam(String),
    /// `...` before the end.
    #[error("route pattern {0:?} has '...' before its last segment")]
    RestNotLast(String),
    /// The same parameter name twice.
    #[error("route pattern {pattern:?} uses parameter {name:?} twice")]
    DuplicateParam {
        /// The pattern.
        pattern: String,
        /// The repeated name.
        name: String,
    },
}

impl FromStr for RoutePattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, PatternError> {
        if text.len() > MAX_PATTERN_BYTES || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PatternError::Unfit {
                start: text.chars().take(32).collect(),
                bytes: text.len(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute(text.to_owned()));
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = rest.split('/').collect();
        for (index, segment) in parts.iter().copied().enumerate() {
            if segment == REST {
                if index + 1 != parts.len() {
                    return Err(PatternError::RestNotLast(text.to_owned()));
                }
                segments.push(Segment::Rest);
                continue;
            }
            let parsed = match segment.split_once(':') {
                None => Segment::Literal(segment.to_owned()),
                Some((_, "")) => return Err(PatternError::UnnamedParam(text.to_owned())),
                Some((prefix, name)) => {
                    let duplicate = segments
                        .iter()
                        .any(|s| matches!(s, Segment::Param { name: other, .. } if other == name));
                    if duplicate {
                        return Err(PatternError::DuplicateParam {
                            pattern: text.to_owned(),
                            name: name.to_owned(),
                        });
                    }
                    Segment::Param {
                        prefix: prefix.to_owned(),
                        name: name.to_owned(),
                    }
                }
            };
            segments.push(parsed);
        }
        Ok(RoutePattern {
            text: Arc::from(text),
            segments,
        })
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl RoutePattern {
    /// The pattern as written, shared: `http.route`.
    pub(crate) fn shared(&self) -> &Arc<str> {
        &self.text
    }

    /// The parameters bound when `path` matches, else `None`.
    fn matches(&self, path: &[&str]) -> Option<Vec<(String, String)>> {
        let fits = match self.segments.last() {
            Some(Segment::Rest) => path.len() + 1 >= self.segments.len(),
            _ => path.len() == self.segments.len(),
        };
        if !fits {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(path) {
            match segment {
                Segment::Rest => break,
                Segment::Literal(literal) if literal == part => {}
                Segment::Param { prefix, name } => {
                    let value = part
                        .strip_prefix(prefix.as_str())
                        .filter(|value| !value.is_empty())?;
                    params.push((name.clone(), value.to_owned()));
                }
                Segment::Literal(_) => return None,
            }
        }
        Some(params)
    }

    /// How specific each segment is: higher wins, compared left to right.
    /// The route tree's search order follows it; the tests check that.
    #[cfg(test)]
    /// A pattern without `...` ends in 1, so `/a` beats `/a/...` on `/a`.
    fn specificity(&self) -> impl Iterator<Item = u8> + '_ {
        let exact = !matches!(self.segments.last(), Some(Segment::Rest));
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(_) => 3,
                Segment::Param { prefix, .. } if !prefix.is_empty() => 2,
                Segment::Param { .. } => 1,
                Segment::Rest => 0,
            })
            .chain(exact.then_some(1))
    }
}

/// What serves a route: named so a clash can say who already serves it.
pub trait RouteOwner {
    /// The owner's name, e.g. the plugin's.
    fn owner_name(&self) -> &str;
}

/// One route and what serves it (a plugin, in comb).
#[derive(Clone)]
pub struct Route<P> {
    /// The method it serves.
    pub method: RouteMethod,
    /// The path pattern.
    pub pattern: RoutePattern,
    /// What serves it.
    pub target: P,
}

/// The routes of every serving plugin. Immutable once built: a reload
/// builds a new table and swaps it in whole, so every request sees one
/// consistent version.
///
/// Routes sit in a tree of path segments, so a lookup follows the path
/// (hash lookups for literal segments) instead of trying every route, and
/// adding a route compares it only with those of the same shape.
pub struct RouteTable<P> {
    routes: Vec<Route<P>>,
    root: Node,
}

impl<P> Default for RouteTable<P> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            root: Node::default(),
        }
    }
}

/// One segment position in the route tree: where each kind of segment
/// leads, and the routes (indexes) whose pattern ends here.
#[derive(Default)]
struct Node {
    literals: HashMap<String, Node>,
    /// Parameters after a literal prefix (`@:handle`), by prefix.
    prefixed: Vec<(String, Node)>,
    param: Option<Box<Node>>,
    /// Routes whose pattern ends at this segment.
    exact: Vec<usize>,
    /// Routes whose pattern ends with `...` here.
    rest: Vec<usize>,
}

impl Node {
    /// The list of routes with the shape of `segments`, made on the way.
    fn routes_mut(&mut self, segments: &[Segment]) -> &mut Vec<usize> {
        let Some((segment, tail)) = segments.split_first() else {
            return &mut self.exact;
        };
        let child = match segment {
            Segment::Rest => return &mut self.rest,
            Segment::Literal(text) => self.literals.entry(text.clone()).or_default(),
            Segment::Param { prefix, .. } if prefix.is_empty() => {
                self.param.get_or_insert_with(Box::default)
            }
            Segment::Param { prefix, .. } => {
                match self.prefixed.iter().position(|(p, _)| p == prefix) {
                    Some(index) => &mut self.prefixed[index].1,
                    None => {
                        self.prefixed.push((prefix.clone(), Node::default()));
                        &mut self.prefixed.last_mut().expect("just pushed").1
                    }
                }
            }
        };
        child.routes_mut(tail)
    }

    /// The routes with the shape of `segments`.
    fn routes(&self, segments: &[Segment]) -> &[usize] {
        let Some((segment, tail)) = segments.split_first() else {
            return &self.exact;
        };
        let child = match segment {
            Segment::Rest => return &self.rest,
            Segment::Literal(text) => self.literals.get(text),
            Segment::Param { prefix, .. } if prefix.is_empty() => self.param.as_deref(),
            Segment::Param { prefix, .. } => self
                .prefixed
                .iter()
                .find_map(|(p, child)| (p == prefix).then_some(child)),
        };
        child.map_or(&[], |child| child.routes(tail))
    }

    /// The first route list along `path` that `accept` takes a route from,
    /// most specific first: literal, prefixed parameter, bare parameter,
    /// then `...`, segment by segment (so the first found is the best).
    fn search(&self, path: &[&str], accept: &impl Fn(&[usize]) -> Option<usize>) -> Option<usize> {
        match path.split_first() {
            None => {
                if let Some(found) = accept(&self.exact) {
                    return Some(found);
                }
            }
            Some((part, tail)) => {
                let found = self
                    .literals
                    .get(*part)
                    .and_then(|child| child.search(tail, accept))
                    .or_else(|| {
                        self.prefixed.iter().find_map(|(prefix, child)| {
                            part.strip_prefix(prefix.as_str())
                                .is_some_and(|value| !value.is_empty())
                                .then(|| child.search(tail, accept))
                                .flatten()
                        })
                    })
                    .or_else(|| {
                        self.param
                            .as_ref()
                            .filter(|_| !part.is_empty())
                            .and_then(|child| child.search(tail, accept))
                    });
                if found.is_some() {
                    return found;
                }
            }
        }
        accept(&self.rest)
    }
}

/// What the table says about a request.
pub enum Lookup<'a, P> {
    /// A route matched.
    Found {
        /// The matching route.
        route: &'a Route<P>,
        /// Its parameters, in pattern order.
        params: Vec<(String, String)>,
    },
    /// The path matches routes, none for this method.
    MethodNotAllowed {
        /// The most specific matching pattern.
        pattern: &'a RoutePattern,
        /// The methods that pattern's path does serve, sorted.
        allowed: Vec<http::Method>,
    },
    /// No route matches the path.
    NotFound,
}

/// A route that would shadow one already in the table.
#[derive(Debug, thiserror::Error)]
#[error("route {method} {pattern} is already served by plugin {owner:?}")]
pub struct RouteClash {
    /// The method.
    pub method: RouteMethod,
    /// The clashing pattern.
    pub pattern: String,
    /// The plugin that already serves it.
    pub owner: String,
}

impl<P: RouteOwner> RouteTable<P> {
    /// Each owner serving routes, once (by name), in the order they were
    /// added.
    pub fn owners(&self) -> impl Iterator<Item = &P> {
        let mut seen = std::collections::HashSet::new();
        self.routes
            .iter()
            .map(|route| &route.target)
            .filter(move |target| seen.insert(target.owner_name()))
    }

    /// What serves the routes of the owner named `name`, if it serves any.
    pub fn owner(&self, name: &str) -> Option<&P> {
        self.routes
            .iter()
            .map(|route| &route.target)
            .find(|target| target.owner_name() == name)
    }

    /// Adds all of `routes`, or none when one clashes with a route already
    /// in the table (same method, or `*` on either side, and a pattern
    /// matching exactly the same paths): the plugin already serving keeps
    /// its route.
    pub fn add(&mut self, routes: Vec<Route<P>>) -> Result<(), RouteClash> {
        for new in &routes {
            if let Some(existing) = self
                .root
                .routes(&new.pattern.segments)
                .iter()
                .map(|&index| &self.routes[index])
                .find(|r| r.method.overlaps(&new.method))
            {
                return Err(RouteClash {
                    method: new.method.clone(),
                    pattern: new.pattern.to_string(),
                    owner: existing.target.owner_name().to_owned(),
                });
            }
        }
        for route in routes {
            let index = self.routes.len();
            self.root.routes_mut(&route.pattern.segments).push(index);
            self.routes.push(route);
        }
        Ok(())
    }

    /// The route among `candidates` (one shape) that serves `method`: one
    /// naming it, else a `*` one.
    fn serving(&self, candidates: &[usize], method: &http::Method) -> Option<usize> {
        let with = |wanted: &dyn Fn(&RouteMethod) -> bool| {
            candidates
                .iter()
                .copied()
                .find(|&index| wanted(&self.routes[index].method))
        };
        with(&|route| matches!(route, RouteMethod::Only(named) if named == method))
            .or_else(|| with(&|route| *route == RouteMethod::Any))
    }

    /// Every route, in the order added.
    pub(crate) fn routes(&self) -> &[Route<P>] {
        &self.routes
    }

    /// Finds the route for `method` and `path`. `HEAD` falls back to `GET`;
    /// a `*` route serves any method, after a route naming it.
    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_, P> {
        let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let found = self
            .root
            .search(&parts, &|candidates| self.serving(candidates, method))
            .or_else(|| {
                (method == http::Method::HEAD)
                    .then(|| {
                        self.root.search(&parts, &|candidates| {
                            self.serving(candidates, &http::Method::GET)
                        })
                    })
                    .flatten()
            });
        if let Some(index) = found {
            let route = &self.routes[index];
            return Lookup::Found {
                route,
                params: route.pattern.matches(&parts).unwrap_or_default(),
            };
        }
        // The most specific pattern for the path, whatever its methods.
        let Some(first) = self
            .root
            .search(&parts, &|candidates| candidates.first().copied())
        else {
            return Lookup::NotFound;
        };
        let pattern = &self.routes[first].pattern;
        // No `*` route is among them, or it would have served the request.
        let mut allowed: Vec<http::Method> = self
            .root
            .routes(&pattern.segments)
            .iter()
            .filter_map(|&index| match &self.routes[index].method {
                RouteMethod::Only(method) => Some(method.clone()),
                RouteMethod::Any => None,
            })
            .collect();
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        Lookup::MethodNotAllowed { pattern, allowed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> RoutePattern {
        text.parse().unwrap()
    }

    #[test]
    fn parses_literal_param_and_prefixed_param() {
        let p = pattern("/api/activities/@:handle");
        assert_eq!(
            p.matches(&["api", "activities", "@andrewbrown"]),
            Some(vec![("handle".into(), "andrewbrown".into())])
        );
        assert_eq!(p.matches(&["api", "activities", "andrewbrown"]), None);
        assert_eq!(
            p.matches(&["api", "activities", "@"]),
            None,
            "a parameter needs one character"
        );
        assert_eq!(p.matches(&["api", "activities", "@x", "extra"]), None);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(
            "api".parse::<RoutePattern>(),
            Err(PatternError::NotAbsolute("api".into()))
        );
        assert!(matches!(
            "/a/:".parse::<RoutePattern>(),
            Err(PatternError::UnnamedParam(_))
        ));
        assert!(matches!(
            "/:a/:a".parse::<RoutePattern>(),
            Err(PatternError::DuplicateParam { .. })
        ));
    }

    #[test]
    fn a_pattern_is_bounded_printable_ascii() {
        let longest = format!("/{}", "a".repeat(MAX_PATTERN_BYTES - 1));
        assert!(longest.parse::<RoutePattern>().is_ok());
        let error = format!("{longest}a").parse::<RoutePattern>().unwrap_err();
        assert_eq!(
            error,
            PatternError::Unfit {
                start: longest[..32].to_owned(),
                bytes: MAX_PATTERN_BYTES + 1
            }
        );
        assert!(error.to_string().contains("at most 256 bytes"), "{error}");
        for unfit in ["/a b", "/a\nb", "/café"] {
            assert!(
                matches!(
                    unfit.parse::<RoutePattern>(),
                    Err(PatternError::Unfit { .. })
                ),
                "{unfit:?}"
            );
        }
    }

    #[test]
    fn literal_beats_prefixed_beats_bare_parameter() {
        let literal = pattern("/api/activities/home");
        let prefixed = pattern("/api/activities/@:handle");
        let bare = pattern("/api/activities/:uuid");
        assert!(literal.specificity().cmp(prefixed.specificity()).is_gt());
        assert!(prefixed.specificity().cmp(bare.specificity()).is_gt());
        assert!(bare.matches(&["api", "activities", "home"]).is_some());
    }

    impl RouteOwner for &'static str {
        fn owner_name(&self) -> &str {
            self
        }
    }

    fn table(routes: &[(&str, &str, &'static str)]) -> RouteTable<&'static str> {
        let mut table = RouteTable::default();
        for (method, text, owner) in routes {
            table
                .add(vec![Route {
                    method: method.parse().unwrap(),
                    pattern: pattern(text),
                    target: *owner,
                }])
                .unwrap();
        }
        table
    }

    fn found(
        table: &RouteTable<&'static str>,
        method: &str,
        path: &str,
    ) -> Option<(&'static str, Vec<(String, String)>)> {
        match table.lookup(&method.parse().unwrap(), path) {
            Lookup::Found { route, params } => Some((route.target, params)),
            _ => None,
        }
    }

    #[test]
    fn lookup_prefers_the_most_specific_route() {
        let table = table(&[
            ("GET", "/api/activities/:uuid", "show"),
            ("GET", "/api/activities/home", "home"),
            ("GET", "/api/activities/@:handle", "user"),
            ("POST", "/api/activities/:uuid/reply", "reply"),
        ]);
        assert_eq!(
            found(&table, "GET", "/api/activities/home"),
            Some(("home", vec![]))
        );
        assert_eq!(
            found(&table, "GET", "/api/activities/@worf"),
            Some(("user", vec![("handle".into(), "worf".into())]))
        );
        assert_eq!(
            found(&table, "GET", "/api/activities/@"),
            Some(("show", vec![("uuid".into(), "@".into())]))
        );
        assert_eq!(
            found(&table, "GET", "/api/activities/123"),
            Some(("show", vec![("uuid".into(), "123".into())]))
        );
        assert_eq!(
            found(&table, "HEAD", "/api/activities/home"),
            Some(("home", vec![]))
        );
        assert!(matches!(
            table.lookup(&http::Method::GET, "/api/activities/home/"),
            Lookup::NotFound
        ));
        assert!(matches!(
            table.lookup(&http::Method::GET, "/nothing"),
            Lookup::NotFound
        ));
        match table.lookup(&http::Method::GET, "/api/activities/1/reply") {
            Lookup::MethodNotAllowed { pattern, allowed } => {
                assert_eq!(&**pattern.shared(), "/api/activities/:uuid/reply");
                assert_eq!(allowed, vec![http::Method::POST]);
            }
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn a_clashing_plugin_adds_nothing_and_the_first_keeps_its_route() {
        let mut table = table(&[("GET", "/api/activities/:uuid", "first")]);
        let clash = table
            .add(vec![
                Route {
                    method: "GET".parse().unwrap(),
                    pattern: pattern("/other"),
                    target: "second",
                },
                Route {
                    method: "GET".parse().unwrap(),
                    pattern: pattern("/api/activities/:id"),
                    target: "second",
                },
            ])
            .unwrap_err();
        assert_eq!(clash.owner, "first");
        assert_eq!(table.routes().len(), 1);
        assert!(
            table
                .add(vec![Route {
                    method: "POST".parse().unwrap(),
                    pattern: pattern("/api/activities/:id"),
                    target: "second"
                }])
                .is_ok()
        );
    }

    #[test]
    fn the_tree_finds_what_comparing_every_route_by_specificity_finds() {
        let patterns = [
            "/a/b",
            "/a/:x",
            "/a/@:x",
            "/a/...",
            "/a/b/...",
            "/a/:x/c",
            "/a/@:x/...",
            "/...",
            "/:x/b",
            "/a/b/c",
            "/",
            "/:x",
        ];
        let table = table(
            &patterns
                .iter()
                .map(|p| ("GET", *p, "p"))
                .collect::<Vec<_>>(),
        );
        for path in [
            "/a/b", "/a/c", "/a/@c", "/a", "/a/b/c", "/a/z/c", "/a/@z/c", "/x/b", "/", "/q",
            "/a/b/c/d", "/a/@", "/a/",
        ] {
            let parts: Vec<&str> = path[1..].split('/').collect();
            let expected = patterns
                .iter()
                .map(|p| pattern(p))
                .filter(|p| p.matches(&parts).is_some())
                .max_by(|a, b| a.specificity().cmp(b.specificity()))
                .map(|p| p.to_string());
            let found = match table.lookup(&http::Method::GET, path) {
                Lookup::Found { route, .. } => Some(route.pattern.to_string()),
                _ => None,
            };
            assert_eq!(found, expected, "GET {path}");
        }
    }

    #[test]
    fn the_rest_of_a_path_and_any_method_lose_to_anything_more_specific() {
        let rest = pattern("/hello/...");
        assert!(rest.matches(&["hello"]).is_some());
        assert!(rest.matches(&["hello", "a", "b"]).is_some());
        assert!(rest.matches(&["hell"]).is_none());
        assert!(matches!(
            "/a/.../b".parse::<RoutePattern>(),
            Err(PatternError::RestNotLast(_))
        ));
        let table = table(&[
            ("*", "/hello/...", "proxy"),
            ("GET", "/hello/:id", "param"),
            ("GET", "/hello", "exact"),
            ("*", "/...", "everything"),
        ]);
        assert_eq!(found(&table, "GET", "/hello").unwrap().0, "exact");
        assert_eq!(found(&table, "GET", "/hello/x").unwrap().0, "param");
        assert_eq!(found(&table, "POST", "/hello/x").unwrap().0, "proxy");
        assert_eq!(found(&table, "DELETE", "/hello/x/y").unwrap().0, "proxy");
        assert_eq!(found(&table, "PATCH", "/other").unwrap().0, "everything");
        // `*` clashes with every method on the same shape.
        let mut clashing = RouteTable::default();
        clashing
            .add(vec![Route {
                method: "GET".parse().unwrap(),
                pattern: pattern("/x/..."),
                target: "a",
            }])
            .unwrap();
        let clash = clashing
            .add(vec![Route {
                method: "*".parse().unwrap(),
                pattern: pattern("/x/..."),
                target: "b",
            }])
            .unwrap_err();
        assert_eq!(clash.owner, "a");
    }

    #[test]
    fn a_route_method_is_a_routable_method_in_upper_case_or_any() {
        assert_eq!("*".parse(), Ok(RouteMethod::Any));
        assert_eq!("PATCH".parse(), Ok(RouteMethod::Only(http::Method::PATCH)));
        for refused in ["get", "CONNECT", "TRACE", "BREW", "", "**"] {
            let error = refused.parse::<RouteMethod>().unwrap_err();
            assert_eq!(error.method, refused);
        }
        assert_eq!(RouteMethod::Any.to_string(), "*");
        assert!(RouteMethod::Any.overlaps(&RouteMethod::Only(http::Method::GET)));
        assert!(
            !RouteMethod::Only(http::Method::PUT).overlaps(&RouteMethod::Only(http::Method::GET))
        );
    }
}
