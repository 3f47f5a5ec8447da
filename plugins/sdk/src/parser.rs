//! Parser plugins: the tag grammar of a dialect.

pub use crate::bindings::parser::exports::research::plugins::parser::Action;
pub use crate::types::Passage;

/// A tag grammar: built once per instance from its settings. Export it with
/// [`export_parser!`](crate::export_parser).
pub trait Parser: Sized + Send + Sync + 'static {
    /// Reads and checks the settings ([`crate::config`]); an error keeps the plugin from
    /// loading.
    fn new() -> Result<Self, String>;

    /// Strings that end a turn (matched by the host while it samples).
    fn stop_sequences(&self) -> Vec<String>;

    /// What the model asked for in one turn (text since the last observation, stop sequence
    /// included).
    fn parse(&self, turn: String) -> Action;

    /// The observation shown to the model for one query's passages.
    fn format_results(&self, query: String, passages: Vec<Passage>) -> String;
}

/// The parser value inside an exported call. The parser's calls have no error side, and the
/// host always runs `init` first, so a missing value is a broken host: trap.
#[doc(hidden)]
pub fn __built<T>(slot: &'static crate::__private::Slot<T>) -> &'static T {
    match slot.get() {
        Ok(value) => value,
        Err(message) => panic!("{message}"),
    }
}

/// Exports a type (any path) that implements [`Parser`] as this component's parser.
#[macro_export]
macro_rules! export_parser {
    ($ty:ty) => {
        const _: () = {
            static PLUGIN: $crate::__private::Slot<$ty> = $crate::__private::Slot::new();
            struct Export;
            impl $crate::bindings::parser::Guest for Export {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    PLUGIN.init(<$ty as $crate::parser::Parser>::new)
                }
            }
            impl $crate::bindings::parser::exports::research::plugins::parser::Guest for Export {
                fn stop_sequences() -> ::std::vec::Vec<::std::string::String> {
                    <$ty as $crate::parser::Parser>::stop_sequences($crate::parser::__built(&PLUGIN))
                }
                fn parse(turn: ::std::string::String) -> $crate::parser::Action {
                    <$ty as $crate::parser::Parser>::parse($crate::parser::__built(&PLUGIN), turn)
                }
                fn format_results(
                    query: ::std::string::String,
                    passages: ::std::vec::Vec<$crate::parser::Passage>,
                ) -> ::std::string::String {
                    <$ty as $crate::parser::Parser>::format_results(
                        $crate::parser::__built(&PLUGIN),
                        query,
                        passages,
                    )
                }
            }
            $crate::bindings::parser::__export_parser_world!(Export with_types_in $crate::bindings::parser);
        };
    };
}
