//! Each correlation kind, declared once: its material's parts (name, type,
//! length and source, in the order they are drawn), its keys, and how the
//! dealer derives the corrected parts (`Kind::derive`). Several requests
//! may share one kind ([`Triple`] answers every product of masks).

/// Declares a kind's material struct and its `Kind` parts from one list:
/// `Name(req) { setup; } { field: Type = part, … } [keys Type = shape]`,
/// where `setup` binds the request's fields that the parts' lengths use.
macro_rules! kind {
    (
        $(#[$doc:meta])*
        $name:ident($req:ident) { $($setup:tt)* }
        {
            $( $(#[$fdoc:meta])* $field:ident : $ty:ty = $part:expr ),+ $(,)?
        }
        $( keys $kty:ty = $kshape:expr; )?
    ) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )+
            $(
                /// DCF correction words (identical for both parties).
                pub keys: $kty,
            )?
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}(<secret>)", stringify!($name))
            }
        }

        impl $name {
            #[allow(unused_variables)]
            fn declared($req: &$crate::dealer::Request) -> Vec<$crate::dealer::parts::Part> {
                $($setup)*
                vec![ $( ($part).named(stringify!($field)) ),+ ]
            }

            #[allow(unused_variables)]
            fn declared_keys($req: &$crate::dealer::Request) -> $crate::dealer::parts::KeyShape {
                $($setup)*
                kind!(@shape $($kshape)?)
            }
        }

        impl $crate::dealer::parts::Kind for $name {
            type Keys = kind!(@keys_ty $($kty)?);

            fn parts(req: &$crate::dealer::Request) -> Vec<$crate::dealer::parts::Part> {
                Self::declared(req)
            }

            fn key_shape(req: &$crate::dealer::Request) -> $crate::dealer::parts::KeyShape {
                Self::declared_keys(req)
            }

            #[allow(unused_variables)]
            fn assemble(values: Vec<$crate::dealer::parts::Value>, keys: Self::Keys) -> Self {
                let mut values = values.into_iter();
                $name {
                    $( $field: $crate::dealer::parts::PartValue::from_value(values.next().expect("one value a part")), )+
                    $( keys: { let k: $kty = keys; k }, )?
                }
            }

            fn words(&self) -> Vec<Option<&Vec<u64>>> {
                vec![ $( $crate::dealer::parts::PartValue::words(&self.$field) ),+ ]
            }

            fn words_mut(&mut self) -> Vec<Option<&mut Vec<u64>>> {
                vec![ $( $crate::dealer::parts::PartValue::words_mut(&mut self.$field) ),+ ]
            }

            fn empty() -> Self {
                $name {
                    $( $field: Vec::new(), )+
                    $( keys: <$kty as $crate::dealer::parts::Keys>::none(), )?
                }
            }

            fn derive(
                masks: &mut $crate::dealer::masks::Masks,
                req: &$crate::dealer::Request,
                m0: &Self,
                m1: &Self,
            ) -> $crate::error::Result<(Self, Vec<u8>)> {
                $name::derive_full(masks, req, m0, m1)
            }
        }
    };
    (@shape) => { $crate::dealer::parts::KeyShape::None };
    (@shape $e:expr) => { $e };
    (@keys_ty) => { () };
    (@keys_ty $t:ty) => { $t };
}

mod compare;
mod products;

pub use compare::{BitCompare, Compare, CompareProducts};
pub use products::{PendingRowScale, Triple, TruncRowScale, WeightMask, Wrap};
