//! The generator behind the node's config keys: `node/config.rs` lists every key once
//! (doc, type, default, and its flag if it has one) in a `node_config_keys!` table,
//! and this macro makes from that one entry the TOML file's field, its default, the
//! `plumcore node` flag and the overlay of the flag onto the key. A key added to the
//! table is in all four; none of them can drift from the others.
//!
//! The flag struct derives `clap::Args` here in the library, next to the keys it is
//! generated from, which is why clap is a dependency of the library and not only of
//! the binary; the binary flattens it into its `node` subcommand.

/// How a flag that was given lands on its key: a value flag replaces the key's value
/// (`T`, or `Some(T)` for an optional key, through `From`), a switch turns the key on,
/// and a repeatable flag given at least once replaces the whole list (so `--seed`
/// replaces the file's `seeds`). A flag that was not given leaves the key as the file
/// (or the default) set it.
pub(crate) trait Overlay<K> {
    fn overlay(&self, key: &mut K);
}

impl<T: Clone, K: From<T>> Overlay<K> for Option<T> {
    fn overlay(&self, key: &mut K) {
        if let Some(v) = self {
            *key = K::from(v.clone());
        }
    }
}

impl Overlay<bool> for bool {
    fn overlay(&self, key: &mut bool) {
        if *self {
            *key = true;
        }
    }
}

impl<T: Clone> Overlay<Vec<T>> for Vec<T> {
    fn overlay(&self, key: &mut Vec<T>) {
        if !self.is_empty() {
            key.clone_from(self);
        }
    }
}

/// Generates the config struct, its `Default`, the flag struct and the overlay from one
/// table. Each entry of `keys` is
///
/// ```text
/// /// What the key means, its bounds, how to tune it (the config struct's field doc).
/// #[serde(...)]                          // optional, for the TOML side
/// name: Type = default_expression
///     , flag FlagType [clap arguments] "flag help"   // optional: keys without a flag
///     ;                                              // are set in the file only
/// ```
///
/// The flag is `--name` with `_` written `-` (clap's `long`) unless the clap arguments
/// say `long = "..."`; `FlagType` is `Option<T>` for a value, `bool` for a switch, or
/// `Vec<T>` for a repeatable flag, and `Overlay` says how each lands on the key.
/// Each entry of `switches` is a flag without a key of its own that sets another
/// (possibly nested) key: `/// help` then `name => path.to.key = value;`.
macro_rules! node_config_keys {
    (
        $(#[$config_attr:meta])*
        pub struct $config:ident;
        $(#[$flags_attr:meta])*
        pub struct $flags:ident;
        keys {
            $(
                $(#[$key_attr:meta])*
                $key:ident: $ty:ty = $default:expr
                $(, flag $flag_ty:ty [$($clap:tt)*] $help:literal)?;
            )*
        }
        switches {
            $(
                $(#[$switch_attr:meta])*
                $switch:ident => $($target:ident).+ = $value:expr;
            )*
        }
    ) => {
        $(#[$config_attr])*
        #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $config {
            $(
                $(#[$key_attr])*
                pub $key: $ty,
            )*
        }

        impl Default for $config {
            fn default() -> Self {
                Self {
                    $($key: $default,)*
                }
            }
        }

        $(#[$flags_attr])*
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct $flags {
            $($(
                #[doc = $help]
                #[arg(long, $($clap)*)]
                pub $key: $flag_ty,
            )?)*
            $(
                $(#[$switch_attr])*
                #[arg(long)]
                pub $switch: bool,
            )*
        }

        impl $flags {
            /// Overlays every flag that was given onto its key, in table order, then
            /// the switches.
            fn overlay(&self, cfg: &mut $config) {
                $($(
                    <$flag_ty as $crate::node::config_keys::Overlay<$ty>>::overlay(
                        &self.$key,
                        &mut cfg.$key,
                    );
                )?)*
                $(
                    if self.$switch {
                        cfg.$($target).+ = $value;
                    }
                )*
            }
        }
    };
}

pub(crate) use node_config_keys;

#[cfg(test)]
mod tests {
    use super::Overlay;

    #[test]
    fn a_flag_not_given_leaves_the_key() {
        let mut n = 5u32;
        None::<u32>.overlay(&mut n);
        assert_eq!(n, 5);
        let mut on = true;
        false.overlay(&mut on);
        assert!(on, "a switch not given never turns a key off");
        let mut list = vec![1, 2];
        Vec::<i32>::new().overlay(&mut list);
        assert_eq!(list, [1, 2]);
    }

    #[test]
    fn a_flag_given_replaces_the_key() {
        let mut n = 5u32;
        Some(7u32).overlay(&mut n);
        assert_eq!(n, 7);
        let mut opt: Option<u32> = None;
        Some(7u32).overlay(&mut opt);
        assert_eq!(opt, Some(7));
        let mut on = false;
        true.overlay(&mut on);
        assert!(on);
        let mut list = vec![1, 2];
        vec![3].overlay(&mut list);
        assert_eq!(list, [3], "a repeated flag replaces the list, not appends");
    }
}
